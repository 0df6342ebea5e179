"""The options of a rented machine, declared once for `dlcloud launch` and `dlcloud bench`.

Both commands add them with add_machine_options and read them with machine_options, which
checks every value before the first AWS call: a refused value leaves the account untouched.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields
from typing import Any

from bench.exitcodes import USAGE
from cloud import ami, guard
from cloud.aws import CloudError

VOLUME_MIN_GB = 30  # the Deep Learning AMI's root snapshot needs it
VOLUME_MAX_GB = 16384  # the largest gp3 volume AWS makes
_AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}", re.ASCII)


@dataclass(frozen=True, kw_only=True)
class MachineOptions:
    """How each instance is rented: market, lifetime, image, access, disk, idle stop."""

    ttl_text: str = "4h"
    spot: bool = False
    ami_type: str = ami.DEFAULT_AMI_TYPE
    ami_id: str | None = None
    key_name: str | None = None
    ssh_cidr: str | None = None
    allow_wide_cidr: bool = False
    volume_gb: int = 100
    idle_stop: str = "30m"

    def check(self) -> MachineOptions:
        """Every value checked offline; the first bad one is a CloudError (exit 2)."""
        guard.parse_ttl(self.ttl_text)
        guard.parse_idle(self.idle_stop)
        if self.key_name is not None:
            guard.check_key_name(self.key_name)
        if self.ssh_cidr is not None:
            guard.check_cidr(self.ssh_cidr, self.allow_wide_cidr)
        if not VOLUME_MIN_GB <= self.volume_gb <= VOLUME_MAX_GB:
            raise CloudError(
                f"--volume-gb {self.volume_gb}: must be {VOLUME_MIN_GB} to {VOLUME_MAX_GB} GiB "
                "(the Deep Learning AMI needs 30; gp3 volumes end at 16384)",
                USAGE,
            )
        if self.ami_id is not None and not _AMI_ID.fullmatch(self.ami_id):
            raise CloudError(
                f"--ami-id {self.ami_id!r}: write an image id like ami-0abc1234", USAGE
            )
        return self

    def request(self, instance_type: str, name: str, campaign: str | None = None) -> LaunchRequest:
        values = {f.name: getattr(self, f.name) for f in fields(MachineOptions)}
        return LaunchRequest(instance_type, name, campaign, **values)


@dataclass(frozen=True)
class LaunchRequest(MachineOptions):
    """One instance to launch: its type and name, the campaign it belongs to, and the options."""

    instance_type: str
    name: str
    campaign: str | None = None


def checked_name(value: str | None, default: str) -> str:
    """--name as given (an empty one is refused, not taken as the default), else the default."""
    return guard.check_name(default if value is None else value)


def add_machine_options(parser: argparse.ArgumentParser, *, ttl_default: str) -> None:
    """The options every command that rents instances takes."""
    parser.add_argument(
        "--spot", action="store_true", help="spot market (cheaper, can be interrupted)"
    )
    parser.add_argument(
        "--ttl",
        default=ttl_default,
        help="each instance's lifetime before it powers off and terminates, e.g. 90m, 4h, 2d "
        f"(default: {ttl_default}, at most 7d)",
    )
    parser.add_argument(
        "--ami-type",
        default=None,
        help=f"DLAMI type (default: {ami.DEFAULT_AMI_TYPE})",
    )
    parser.add_argument(
        "--os",
        choices=sorted(ami.BY_OS),
        help="the DLAMI of this Ubuntu release (instead of --ami-type)",
    )
    parser.add_argument("--ami-id", help="an exact AMI id instead of the newest DLAMI")
    parser.add_argument(
        "--key-name",
        help="existing key pair whose .pem is in the key folder "
        "(default: dlstation-<region>, created if missing)",
    )
    parser.add_argument("--ssh-cidr", help="who may SSH in (default: your public IP /32)")
    parser.add_argument(
        "--allow-wide-cidr",
        action="store_true",
        help=f"accept an --ssh-cidr wider than /{guard.WIDEST_CIDR}",
    )
    parser.add_argument(
        "--volume-gb",
        type=int,
        default=100,
        help=f"root disk GiB, {VOLUME_MIN_GB} to {VOLUME_MAX_GB} (default 100)",
    )
    parser.add_argument(
        "--idle-stop",
        default="30m",
        help="power off (and terminate) after this long with nothing in use, "
        "e.g. 30m, 2h; off to rely on the TTL only (default: 30m)",
    )


def machine_options(args: argparse.Namespace) -> MachineOptions:
    """The parsed options as one checked value."""
    values: dict[str, Any] = {
        "ttl_text": args.ttl,
        "spot": args.spot,
        "ami_type": ami.choose_type(args.ami_type, args.os),
        "ami_id": args.ami_id,
        "key_name": args.key_name,
        "ssh_cidr": args.ssh_cidr,
        "allow_wide_cidr": args.allow_wide_cidr,
        "volume_gb": args.volume_gb,
        "idle_stop": args.idle_stop,
    }
    return MachineOptions(**values).check()
