"""What keeps a launched instance safe and cheap: tags, the TTL watchdog, SSH key, firewall."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import gzip
import hashlib
import ipaddress
import os
import re
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cloud.aws import CloudError, aws_errors, error_code, explain

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
TAG_CREATED_BY = "dlstation:created-by"  # only on what dlcloud created: all it may delete
TAG_IDLE = "dlstation:idle-stop"
TAG_PRICE = "dlstation:usd-per-hour"
TAG_PRICE_BASIS = "dlstation:price-basis"
TAG_CAMPAIGN = "dlstation:campaign"  # on a `dlcloud bench` instance: the campaign that owns it
# The launch's idempotency token: finds an instance whose RunInstances answer never came back.
TAG_TOKEN = "dlstation:launch-token"
# When a launch last set up a key pair or group: younger than GRACE, it is never "unused".
TAG_CLAIMED = "dlstation:launched-with-at"
GRACE = timedelta(minutes=5)
MANAGED_BY = "dlcloud"
CREATED_BY = "dlcloud"
# What dlcloud wrote into the key folder: "<file name> <sha256>" per line.
KEY_LEDGER = ".dlcloud-written"
IDLE_WATCHDOG_FILE = "data/idle_watchdog.py"
# Patterns are matched with fullmatch: `$` would also match before a trailing newline.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
# A key pair name is also a file name in the key folder: no separators, no dot first.
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}", re.ASCII)
# On the instance: `sudo dlstation-keepalive 2h` keeps it up that long, `off` clears it.
KEEPALIVE_COMMAND = "dlstation-keepalive"
CHECKIP_URL = "https://checkip.amazonaws.com"
# ASCII digits only, few of them: the text becomes a tag value (at most 256 characters).
_TTL = re.compile(r"([0-9]{1,5}(?:\.[0-9]{1,3})?)([mhd])", re.ASCII)
_TTL_UNITS = {"m": 60, "h": 3600, "d": 86400}
MAX_TTL = timedelta(days=7)


def parse_ttl(text: str) -> timedelta:
    """'90m', '4h', '1.5d' -> timedelta; refuses zero, junk and more than a week."""
    match = _TTL.fullmatch(text.lower())
    if not match:
        raise CloudError(f"--ttl {text!r}: write it as minutes, hours or days, e.g. 90m, 4h, 2d", 2)
    ttl = timedelta(seconds=float(match.group(1)) * _TTL_UNITS[match.group(2)])
    if ttl < timedelta(minutes=10) or ttl > MAX_TTL:
        raise CloudError(f"--ttl {text!r}: must be between 10m and 7d", 2)
    return ttl


def check_name(name: str) -> str:
    """A host-name-like label, safe in a shell, a tag and an Ansible inventory; else refused."""
    if _NAME.fullmatch(name):
        return name
    valid = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:63].strip("-") or "lab-1"
    raise CloudError(
        f"--name {name!r}: use letters, digits and hyphens only, at most 63 characters, "
        f"not starting or ending with a hyphen; for example --name {valid}",
        2,
    )


def parse_idle(text: str) -> timedelta | None:
    """'30m', '2h' -> timedelta; 'off' -> None (no idle stop)."""
    if text.lower() == "off":
        return None
    match = _TTL.fullmatch(text.lower())
    if not match:
        raise CloudError(f"--idle-stop {text!r}: write e.g. 30m or 1h, or off", 2)
    idle = timedelta(seconds=float(match.group(1)) * _TTL_UNITS[match.group(2)])
    if idle < timedelta(minutes=5) or idle > MAX_TTL:
        raise CloudError(f"--idle-stop {text!r}: must be between 5m and 7d, or off", 2)
    return idle


def check_key_name(name: str) -> str:
    """A key pair name that is also a safe file name in the key folder; else refused."""
    if _KEY_NAME.fullmatch(name) and ".." not in name:
        return name
    raise CloudError(
        f"--key-name {name!r}: use letters, digits and . _ + = @ - only (no / and no ..), "
        "at most 128 characters, starting with a letter or digit",
        2,
    )


def created_by_dlcloud(resource: dict[str, Any]) -> bool:
    """True for a resource dlcloud created (it carries the creation tag), whoever's it is."""
    return tags_of(resource).get(TAG_CREATED_BY) == CREATED_BY


def owned(resource: dict[str, Any], owner: str) -> bool:
    """The one ownership rule: dlcloud created it, for this caller (the owner tag it wrote)."""
    return created_by_dlcloud(resource) and tags_of(resource).get(TAG_OWNER) == owner


def printable(text: str) -> str:
    """A tag as it may be printed: control characters escaped, so no tag can break a line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def owner_of(resource: dict[str, Any]) -> str:
    return printable(tags_of(resource).get(TAG_OWNER, "no owner tag"))


def name_of(resource: dict[str, Any]) -> str:
    return printable(tags_of(resource).get(TAG_NAME, "?"))


def owned_filters(owner: str | None) -> list[dict[str, Any]]:
    """EC2 filters for what dlcloud created; for this owner only unless owner is None."""
    filters = [{"Name": f"tag:{TAG_CREATED_BY}", "Values": [CREATED_BY]}]
    if owner is not None:
        filters.append({"Name": f"tag:{TAG_OWNER}", "Values": [owner]})
    return filters


def ssh_group_name(launch: str, owner: str) -> str:
    """One SSH group per launch name (or campaign) and owner: it admits that launch's address."""
    digest = hashlib.sha256(owner.encode()).hexdigest()[:10]
    return f"dlstation-ssh-{launch}-{digest}"


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
    campaign: str | None = None

    def common(self) -> dict[str, str]:
        return {TAG_PROJECT: PROJECT, TAG_MANAGED: MANAGED_BY, TAG_OWNER: self.owner}

    def created(self) -> dict[str, str]:
        """Tags for a key pair or security group dlcloud creates, and so may delete."""
        return {**self.common(), TAG_CREATED_BY: CREATED_BY}

    def instance(self, ami_type: str, key_name: str, group_id: str) -> dict[str, str]:
        """Tags of an instance and its root disk: created by dlcloud, for this owner."""
        campaign = {TAG_CAMPAIGN: self.campaign} if self.campaign else {}
        return {
            **self.created(),
            **campaign,
            TAG_NAME: self.name,
            TAG_EXPIRES: self.expires_at.isoformat(timespec="seconds"),
            TAG_TTL: self.ttl,
            TAG_AMI_TYPE: ami_type,
            TAG_KEY: key_name,
            TAG_GROUP: group_id,
        }


def idle_watchdog_units(idle: timedelta) -> str:
    """Shell lines installing the idle watchdog (package data) with a one-minute timer."""
    script = resources.files("cloud").joinpath(IDLE_WATCHDOG_FILE).read_bytes()
    # Compressed: user data holds at most 16 KiB. mtime=0 keeps the boot script reproducible.
    packed = base64.encodebytes(gzip.compress(script, mtime=0)).decode().rstrip()
    return f"""mkdir -p /usr/local/lib/dlstation /etc/dlstation
base64 -d <<'WATCHDOG' | gunzip > /usr/local/lib/dlstation/idle_watchdog.py
{packed}
WATCHDOG
cat > /usr/local/bin/{KEEPALIVE_COMMAND} <<'KEEPALIVE'
#!/bin/sh
exec /usr/bin/python3 /usr/local/lib/dlstation/idle_watchdog.py keepalive "$@"
KEEPALIVE
chmod 755 /usr/local/bin/{KEEPALIVE_COMMAND}
cat > /etc/dlstation/idle-stop.env <<'ENV'
DLSTATION_IDLE_SECONDS={int(idle.total_seconds())}
DLSTATION_JUPYTER_TOKEN_FILE=/opt/dlstation/jupyter/token.env
ENV
cat > /etc/systemd/system/dlstation-idle.service <<'UNIT'
[Unit]
Description=dlstation idle stop: power off (the instance terminates) when unused
[Service]
Type=oneshot
TimeoutStartSec=150
EnvironmentFile=/etc/dlstation/idle-stop.env
ExecStart=/usr/bin/python3 /usr/local/lib/dlstation/idle_watchdog.py
StandardOutput=journal+console
UNIT
cat > /etc/systemd/system/dlstation-idle.timer <<'UNIT'
[Unit]
Description=dlstation idle stop, checked every minute
[Timer]
OnBootSec=2min
OnUnitActiveSec=1min
[Install]
WantedBy=timers.target
UNIT
systemctl daemon-reload && systemctl enable --now dlstation-idle.timer
"""


def watchdog_user_data(expires_at: datetime, idle: timedelta | None = None) -> str:
    """A boot script that powers the machine off at expiry, or when idle; shutdown = terminate.

    A systemd timer on the absolute time survives reboots; `shutdown -h` is the fallback on
    images without systemd.
    """
    idle_lines = "" if idle is None else idle_watchdog_units(idle)
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
{idle_lines}if systemctl daemon-reload && systemctl enable --now dlstation-ttl.timer; then
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


WIDEST_CIDR = 16  # IPv4 prefixes shorter than this need --allow-wide-cidr


def check_cidr(cidr: str, allow_wide: bool = False) -> str:
    """One IPv4 network, at most a /16 unless allowed by name, never the whole internet."""
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise CloudError(f"--ssh-cidr {cidr!r} is not one network like 203.0.113.7/32", 2) from None
    if network.version == 6:
        raise CloudError(
            f"--ssh-cidr {cidr}: IPv6 is not supported (dlcloud's instances get a public IPv4 "
            "address only); pass your IPv4 address as A.B.C.D/32",
            2,
        )
    if network.prefixlen == 0:
        raise CloudError(f"--ssh-cidr {cidr} would open SSH to the whole internet; refused", 2)
    if network.prefixlen < WIDEST_CIDR and not allow_wide:
        raise CloudError(
            f"--ssh-cidr {cidr} admits {network.num_addresses:,} addresses, wider than a "
            f"/{WIDEST_CIDR}; pass --allow-wide-cidr if you mean it, or your address as /32",
            2,
        )
    return str(network)


def key_dir() -> Path:
    return Path(os.environ.get("DLCLOUD_KEY_DIR", Path.home() / ".ssh" / "dlstation"))


KEY_LOCK = ".dlcloud.lock"
# Launches share it from "ensure key and group" until AWS lists their instance; terminate and
# reap hold it alone from "nothing uses this" until it is deleted.
RESOURCE_LOCK = ".dlcloud-resources.lock"


@contextmanager
def resource_lock(
    folder: Path, *, exclusive: bool, say: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Launches share shared key pairs and groups; removing unused ones waits for them all."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    what = (
        "a launch on this machine to finish with the shared key pair and SSH group"
        if exclusive
        else "a terminate or reap on this machine to finish its cleanup"
    )
    with held(folder / RESOURCE_LOCK, what, exclusive=exclusive, say=say):
        yield


def say_waiting(line: str) -> None:
    print(f"dlcloud: {line}", file=sys.stderr, flush=True)


@contextmanager
def held(
    path: Path,
    what: str,
    *,
    exclusive: bool = True,
    say: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """flock on path; a wait says what it waits for (and the holder's pid) and stays stoppable.

    A signal raises in the blocked flock (interrupts.raised), so Ctrl-C, SIGTERM and SIGHUP
    end the wait at once.
    """
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(32).strip()
            pid = f", held by pid {holder}" if holder.isdigit() else ""
            (say or say_waiting)(f"waiting for {what} (lock {path}{pid}); Ctrl-C stops")
            fcntl.flock(handle, mode)
        if exclusive:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim(ec2: Any, resource_ids: list[str], now: datetime) -> None:
    """Mark a key pair and group as just used, so no terminate elsewhere deletes them now."""
    with aws_errors("marking the key pair and SSH group as in use"):
        ec2.create_tags(
            Resources=resource_ids,
            Tags=[{"Key": TAG_CLAIMED, "Value": now.isoformat(timespec="seconds")}],
        )


def recently_used(resource: dict[str, Any], now: datetime) -> bool:
    """A launch set it up in the last GRACE: it may be on its way to AWS from another machine."""
    try:
        claimed = datetime.fromisoformat(tags_of(resource)[TAG_CLAIMED])
    except (KeyError, ValueError):
        return False
    return now - claimed < GRACE


def young_file(path: Path, now: datetime) -> bool:
    try:
        written = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError:
        return False
    return now - written < GRACE


@contextmanager
def folder_lock(folder: Path, name: str = KEY_LOCK, what: str = "") -> Iterator[None]:
    """One dlcloud at a time on this machine inside: an exclusive lock on folder/name.

    Concurrent launches on one machine would otherwise see a key pair another has just made
    before its private key is on disk, or miss an instance another is about to start.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with held(folder / name, what or f"another dlcloud to finish with the key folder {folder}"):
        yield


def check_folder(folder: Path, option: str) -> Path:
    """Refuse, before anything is created, a folder dlcloud could not create or write in.

    A folder this check had to create is removed again: a refused command leaves nothing.
    """
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise CloudError(
            f"{option} {folder}: {probe} is not a folder; name a folder you can write in", 2
        )
    made = [p for p in [folder, *folder.parents] if not os.path.lexists(p)]
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise CloudError(
            f"{option} {folder}: cannot write there ({error.strerror}); name a folder you can "
            "write in",
            2,
        ) from None
    finally:
        for created in made:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()
    return folder


def ensure_key_pair(ec2: Any, name: str, labels: Labels, folder: Path) -> tuple[str, Path]:
    """Reuse a key pair whose private key we hold, or create an ed25519 one saved 0600.

    Never overwrites a file: if one is at the target path but AWS has no such key pair,
    the user decides what it is.
    """
    with folder_lock(folder):
        return _ensure_key_pair(ec2, name, labels, folder)


def check_key_pair(ec2: Any, name: str, folder: Path) -> dict[str, Any] | None:
    """The key pair when AWS has it and its private key is here, None when neither is; else refused.

    Never overwrites a file: if one is at the target path but AWS has no such key pair,
    the user decides what it is.
    """
    path = folder / f"{name}.pem"
    check_folder(folder, "the key folder (DLCLOUD_KEY_DIR)")
    found = find_key_pair(ec2, name)
    if found is None and os.path.lexists(path):
        raise CloudError(
            f"{path} exists but AWS has no key pair {name!r} in this region; dlcloud will not "
            f"overwrite it: import its public key as {name!r} (aws ec2 import-key-pair), or "
            "pass another --key-name",
            2,
        )
    if found is not None and not path.is_file():
        raise CloudError(
            f"key pair {name!r} exists in AWS but its private key is not at {path}; pass "
            "--key-name with a key you hold, or delete that key pair in the EC2 console",
            2,
        )
    return found


def _ensure_key_pair(ec2: Any, name: str, labels: Labels, folder: Path) -> tuple[str, Path]:
    path = folder / f"{name}.pem"
    if check_key_pair(ec2, name, folder) is None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            created = ec2.create_key_pair(
                KeyName=name,
                KeyType="ed25519",
                TagSpecifications=[
                    {"ResourceType": "key-pair", "Tags": tag_list(labels.created())}
                ],
            )
        except ClientError as error:
            if error_code(error) != "InvalidKeyPair.Duplicate":
                raise explain(error, "creating key pair") from error
            # A concurrent dlcloud created it a moment ago; its file appears shortly.
            return name, wait_for_key_file(path)
        # O_EXCL: a fresh file created 0600, never someone else's file, never readable by others.
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CloudError(
                f"{path} appeared while dlcloud created key pair {name!r}; it was left as is. "
                f"Delete key pair {name!r} in the EC2 console and launch again",
            ) from None
        with os.fdopen(descriptor, "w") as handle:
            handle.write(created["KeyMaterial"])
        record_key_file(path)
    return name, path


def find_key_pair(ec2: Any, name: str) -> dict[str, Any] | None:
    with aws_errors("looking up key pair"):
        found = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]
    return found[0] if found else None


def wait_for_key_file(path: Path, attempts: int = 30, pause: float = 1.0) -> Path:
    for _ in range(attempts):
        if path.is_file() and path.stat().st_size > 0:
            return path
        time.sleep(pause)
    raise CloudError(
        f"key pair {path.stem!r} was created by another dlcloud, but its private key is not at "
        f"{path}; copy it there from the machine that launched, or pass another --key-name"
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ledger(folder: Path) -> dict[str, str]:
    ledger = folder / KEY_LEDGER
    if not ledger.is_file():
        return {}
    entries = {}
    for line in ledger.read_text().splitlines():
        name, _, digest = line.partition(" ")
        entries[name] = digest
    return entries


def record_key_file(path: Path) -> None:
    """Note that dlcloud wrote this file, and what was in it."""
    entries = {**_ledger(path.parent), path.name: _digest(path)}
    (path.parent / KEY_LEDGER).write_text("".join(f"{n} {d}\n" for n, d in entries.items()))


def remove_key_file(path: Path) -> bool:
    """Delete the file only if dlcloud wrote it and nobody changed it since; True if deleted."""
    entries = _ledger(path.parent)
    if not path.is_file() or entries.get(path.name) != _digest(path):
        return False
    path.unlink()
    del entries[path.name]
    (path.parent / KEY_LEDGER).write_text("".join(f"{n} {d}\n" for n, d in entries.items()))
    return True


def default_vpc(ec2: Any) -> str:
    with aws_errors("looking up the default VPC"):
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise CloudError(
            "this region has no default VPC; create one (EC2 console: Actions > "
            "Create default VPC) or choose another region"
        )
    return str(vpcs[0]["VpcId"])


def find_group(ec2: Any, name: str, vpc_id: str) -> dict[str, Any] | None:
    with aws_errors("looking up security group"):
        groups = ec2.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [name]},
                {"Name": "vpc-id", "Values": [vpc_id]},
            ]
        )["SecurityGroups"]
    return groups[0] if groups else None


def check_group(group: dict[str, Any] | None, owner: str) -> None:
    """Refuse a group of dlcloud's name that is not the caller's own dlcloud group."""
    if group is not None and not owned(group, owner):
        whose = "dlcloud did not create" if not created_by_dlcloud(group) else "belongs to"
        detail = "" if not created_by_dlcloud(group) else f" {owner_of(group)}"
        raise CloudError(
            f"a security group named {group['GroupName']!r} exists in {group['VpcId']} that "
            f"{whose}{detail}; dlcloud will not change its rules: rename or delete that group, "
            "or pick another --name",
            2,
        )


def ssh_cidrs(group: dict[str, Any]) -> set[str]:
    """The addresses of the group's rules in the one shape dlcloud adds (TCP 22 to 22): those
    it may revoke exactly as written; any other rule is the user's."""
    return {
        r["CidrIp"]
        for p in group.get("IpPermissions", [])
        if (p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort")) == ("tcp", 22, 22)
        for r in p.get("IpRanges", [])
    }


def port_22_sources(group: dict[str, Any]) -> set[str]:
    """Every IPv4 range any rule of the group lets reach TCP port 22: all-traffic rules and port
    ranges too, whoever added them (ssh_cidrs counts dlcloud's own rules only)."""
    return {
        r["CidrIp"]
        for p in group.get("IpPermissions", [])
        if p.get("IpProtocol") == "-1"
        or (
            p.get("IpProtocol") in ("tcp", "6") and p.get("FromPort", 0) <= 22 <= p.get("ToPort", 0)
        )
        for r in p.get("IpRanges", [])
    }


def ensure_security_group(ec2: Any, name: str, vpc_id: str, cidr: str, labels: Labels) -> str:
    """The launch's own group, admitting SSH from `cidr` and nothing else; made if missing.

    A group is per launch name (or campaign): a rule left from an earlier launch of that name
    is revoked, so no other address, nor any colleague's, rides along.
    """
    group = find_group(ec2, name, vpc_id)
    check_group(group, labels.owner)
    if group is not None:
        group_id = str(group["GroupId"])
        allowed = ssh_cidrs(group)
        for stale in sorted(allowed - {cidr}):
            with aws_errors("revoking an SSH rule no launch needs"):
                ec2.revoke_security_group_ingress(
                    GroupId=group_id,
                    IpPermissions=[{**ssh_permission(stale), "IpRanges": [{"CidrIp": stale}]}],
                )
        if cidr in allowed:
            return group_id
    else:
        try:
            group_id = ec2.create_security_group(
                GroupName=name,
                Description="dlstation: SSH from one address",
                VpcId=vpc_id,
                TagSpecifications=[
                    {"ResourceType": "security-group", "Tags": tag_list(labels.created())}
                ],
            )["GroupId"]
        except ClientError as error:
            if error_code(error) != "InvalidGroup.Duplicate":
                raise explain(error, "creating security group") from error
            # A concurrent dlcloud created it a moment ago: use that one.
            return ensure_security_group(ec2, name, vpc_id, cidr, labels)
    try:
        authorize_ssh(ec2, group_id, cidr)
    except ClientError as error:
        if error_code(error) != "InvalidPermission.Duplicate":  # a concurrent dlcloud added it
            raise explain(error, "allowing SSH") from error
    return group_id


def ssh_permission(cidr: str) -> dict[str, Any]:
    return {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "IpRanges": [{"CidrIp": cidr, "Description": "dlcloud caller"}],
    }


def authorize_ssh(ec2: Any, group_id: str, cidr: str) -> None:
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[ssh_permission(cidr)])


def expiry(now: datetime, ttl: timedelta) -> datetime:
    return (now + ttl).replace(microsecond=0)
