"""What keeps a launched instance safe and cheap: tags, the TTL watchdog, SSH key, firewall."""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cloud.aws import CloudError, aws_errors

PROJECT = "dlstation"
TAG_PROJECT = "Project"
TAG_NAME = "Name"
TAG_OWNER = "dlstation:owner"
TAG_EXPIRES = "dlstation:expires-at"
TAG_TTL = "dlstation:ttl"
TAG_MANAGED = "dlstation:managed-by"
TAG_AMI_TYPE = "dlstation:ami-type"
TAG_KEY = "dlstation:key-name"
TAG_GROUP = "dlstation:security-group"
MANAGED_BY = "dlcloud"
CHECKIP_URL = "https://checkip.amazonaws.com"
_TTL = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_TTL_UNITS = {"m": 60, "h": 3600, "d": 86400}
MAX_TTL = timedelta(days=7)


def parse_ttl(text: str) -> timedelta:
    """'90m', '4h', '1.5d' -> timedelta; refuses zero, junk and more than a week."""
    match = _TTL.match(text.strip().lower())
    if not match:
        raise CloudError(f"--ttl {text!r}: write it as minutes, hours or days, e.g. 90m, 4h, 2d", 2)
    ttl = timedelta(seconds=float(match.group(1)) * _TTL_UNITS[match.group(2)])
    if ttl < timedelta(minutes=10) or ttl > MAX_TTL:
        raise CloudError(f"--ttl {text}: must be between 10m and 7d", 2)
    return ttl


def project_filter() -> list[dict[str, Any]]:
    return [{"Name": f"tag:{TAG_PROJECT}", "Values": [PROJECT]}]


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


@dataclass(frozen=True)
class Labels:
    """The tags every resource dlcloud creates carries."""

    name: str
    owner: str
    expires_at: datetime
    ttl: str

    def common(self) -> dict[str, str]:
        return {TAG_PROJECT: PROJECT, TAG_MANAGED: MANAGED_BY, TAG_OWNER: self.owner}

    def instance(self, ami_type: str, key_name: str, group_id: str) -> dict[str, str]:
        return {
            **self.common(),
            TAG_NAME: self.name,
            TAG_EXPIRES: self.expires_at.isoformat(timespec="seconds"),
            TAG_TTL: self.ttl,
            TAG_AMI_TYPE: ami_type,
            TAG_KEY: key_name,
            TAG_GROUP: group_id,
        }


def watchdog_user_data(expires_at: datetime) -> str:
    """A boot script that powers the machine off at expiry; shutdown means terminate here.

    A systemd timer on the absolute time survives reboots; `shutdown -h` is the fallback on
    images without systemd.
    """
    stamp = expires_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    epoch = int(expires_at.timestamp())
    return f"""#!/bin/bash
# dlstation TTL watchdog: this instance powers off (and so terminates) at {stamp}.
set -u
cat > /etc/systemd/system/dlstation-ttl.service <<'UNIT'
[Unit]
Description=dlstation TTL reached: power off (the instance terminates)
[Service]
Type=oneshot
ExecStart=/usr/bin/wall "dlstation TTL reached: shutting down, the instance will terminate"
ExecStart=/sbin/shutdown -h now
UNIT
cat > /etc/systemd/system/dlstation-ttl.timer <<'UNIT'
[Unit]
Description=dlstation TTL watchdog
[Timer]
OnCalendar={stamp}
Persistent=true
[Install]
WantedBy=timers.target
UNIT
if systemctl daemon-reload && systemctl enable --now dlstation-ttl.timer; then
  exit 0
fi
minutes=$(( ({epoch} - $(date +%s)) / 60 ))
[ "$minutes" -lt 1 ] && minutes=1
shutdown -h +"$minutes" "dlstation TTL reached"
"""


def caller_cidr(fetch: Callable[[], str] | None = None) -> str:
    """The caller's public IPv4 as a /32, asked of AWS's checkip service."""

    def ask_checkip() -> str:
        with urllib.request.urlopen(CHECKIP_URL, timeout=5) as response:
            return str(response.read().decode().strip())

    try:
        address = ipaddress.ip_address((fetch or ask_checkip)())
    except (OSError, ValueError) as error:
        raise CloudError(
            f"cannot find your public IP for the SSH rule ({error}); pass --ssh-cidr A.B.C.D/32",
            2,
        ) from error
    return f"{address}/32"


def check_cidr(cidr: str) -> str:
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise CloudError(f"--ssh-cidr {cidr!r} is not a network like 203.0.113.7/32", 2) from None
    if network.prefixlen == 0:
        raise CloudError("--ssh-cidr 0.0.0.0/0 would open SSH to the whole internet; refused", 2)
    return str(network)


def key_dir() -> Path:
    return Path(os.environ.get("DLCLOUD_KEY_DIR", Path.home() / ".ssh" / "dlstation"))


def ensure_key_pair(ec2: Any, name: str, labels: Labels, folder: Path) -> tuple[str, Path]:
    """Reuse a key pair whose private key we hold, or create an ed25519 one saved 0600."""
    path = folder / f"{name}.pem"
    with aws_errors("looking up key pair"):
        found = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]
    if found:
        if not path.is_file():
            raise CloudError(
                f"key pair {name!r} exists in AWS but its private key is not at {path}; pass "
                "--key-name with a key you hold, or delete that key pair in the EC2 console"
            )
        return name, path
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with aws_errors("creating key pair"):
        created = ec2.create_key_pair(
            KeyName=name,
            KeyType="ed25519",
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": tag_list(labels.common())}],
        )
    # A fresh file created 0600: the key is never readable by others, not even for a moment.
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(created["KeyMaterial"])
    return name, path


def default_vpc(ec2: Any) -> str:
    with aws_errors("looking up the default VPC"):
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise CloudError(
            "this region has no default VPC; create one (EC2 console: Actions > "
            "Create default VPC) or choose another region"
        )
    return str(vpcs[0]["VpcId"])


def ensure_security_group(ec2: Any, name: str, vpc_id: str, cidr: str, labels: Labels) -> str:
    """A group allowing SSH from `cidr` only; reused (and the rule added) if it exists."""
    with aws_errors("looking up security group"):
        groups = ec2.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [name]},
                {"Name": "vpc-id", "Values": [vpc_id]},
            ]
        )["SecurityGroups"]
    if groups:
        group_id = str(groups[0]["GroupId"])
        allowed = {
            r["CidrIp"]
            for p in groups[0].get("IpPermissions", [])
            if p.get("FromPort") == 22
            for r in p.get("IpRanges", [])
        }
        if cidr in allowed:
            return group_id
    else:
        with aws_errors("creating security group"):
            group_id = ec2.create_security_group(
                GroupName=name,
                Description="dlstation: SSH from one address",
                VpcId=vpc_id,
                TagSpecifications=[
                    {"ResourceType": "security-group", "Tags": tag_list(labels.common())}
                ],
            )["GroupId"]
    with aws_errors("allowing SSH"):
        ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "IpRanges": [{"CidrIp": cidr, "Description": "dlcloud caller"}],
                }
            ],
        )
    return group_id


def expiry(now: datetime, ttl: timedelta) -> datetime:
    return (now + ttl).replace(microsecond=0)
