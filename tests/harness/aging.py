"""Make what launches set up look old, as if the grace period (guard.GRACE) were over."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cloud import guard


def age_launch_resources(client: Any, key_folder: Path, minutes: int = 10) -> None:
    """The last launch with each key pair and SSH group, and each key file, `minutes` ago."""
    then = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    ids = [k["KeyPairId"] for k in client.describe_key_pairs()["KeyPairs"]]
    ids += [
        g["GroupId"]
        for g in client.describe_security_groups()["SecurityGroups"]
        if g["GroupName"].startswith("dlstation-ssh")
    ]
    if ids:
        stamp = then.isoformat(timespec="seconds")
        client.create_tags(Resources=ids, Tags=[{"Key": guard.TAG_CLAIMED, "Value": stamp}])
    for path in key_folder.glob("*.pem"):
        os.utime(path, (then.timestamp(), then.timestamp()))
