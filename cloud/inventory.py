"""The static Ansible inventory that `dlcloud launch` writes for users without amazon.aws."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench.exitcodes import USAGE
from cloud import guard
from cloud.aws import CloudError

INVENTORY_ENV = "DLCLOUD_INVENTORY"
HEADER = (
    "# Written by `dlcloud launch`, entries removed by `dlcloud terminate`.\n"
    "# Hosts run the Deep Learning AMI (group dlami): setup.yml verifies them, never reinstalls.\n"
)


class Unsafe(str):
    """A value Ansible must take literally: written with YAML's `!unsafe` tag, never templated."""


class _Dumper(yaml.SafeDumper):
    pass


class _Loader(yaml.SafeLoader):
    pass


_Dumper.add_representer(Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", value))


def _unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(
            None, None, "!unsafe on a non-string", node.start_mark
        )
    return str(loader.construct_scalar(node))


_Loader.add_constructor("!unsafe", _unsafe)


def load(text: str) -> Any:
    """dlcloud's inventory as data (its `!unsafe` values as plain strings)."""
    return yaml.load(text, Loader=_Loader)


def dump(hosts: dict[str, Any]) -> str:
    """Every string value marked `!unsafe`: a `{{` in a path or address runs nothing."""
    data = {
        name: {k: Unsafe(v) if isinstance(v, str) else v for k, v in values.items()}
        for name, values in hosts.items()
    }
    document = {"all": {"children": {"dlami": {"hosts": data}}}}
    return yaml.dump(document, Dumper=_Dumper, sort_keys=True)


def default_path() -> Path:
    """$DLCLOUD_INVENTORY, else inventory/dlcloud.yml of this clone, else ~/.config/dlstation."""
    if os.environ.get(INVENTORY_ENV):
        return Path(os.environ[INVENTORY_ENV])
    clone_inventory = Path(__file__).resolve().parent.parent / "inventory"
    if clone_inventory.is_dir():
        return clone_inventory / "dlcloud.yml"
    return Path.home() / ".config" / "dlstation" / "dlcloud.yml"


def written_by_dlcloud(path: Path) -> bool:
    """True for a file that starts with dlcloud's header: the only kind it rewrites."""
    try:
        with path.open() as handle:
            return handle.readline() == HEADER.splitlines(keepends=True)[0]
    except (OSError, UnicodeDecodeError):
        return False


def check(path: Path) -> Path:
    """Refuse, before anything is launched, an inventory dlcloud could not write safely."""
    guard.check_folder(path.parent, f"--inventory {path}: its folder")
    if path.is_dir():
        raise CloudError(
            f"--inventory {path} is a folder; name a file: dlcloud writes its own inventory",
            USAGE,
        )
    if path.exists() and not written_by_dlcloud(path):
        raise CloudError(
            f"--inventory {path} was not written by dlcloud, which rewrites only its own file: "
            f"name a new file and pass both to Ansible (-i yours -i new.yml)",
            USAGE,
        )
    if path.is_file():
        try:
            hosts_of(load(path.read_text()))
        except (yaml.YAMLError, AttributeError, TypeError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CloudError(
                f"--inventory {path}: dlcloud's file is damaged ({first}); move it away", USAGE
            ) from None
    return path


def hosts_of(document: Any) -> dict[str, Any]:
    hosts = ((document or {}).get("all", {}).get("children", {}).get("dlami", {})).get("hosts")
    if not isinstance(hosts or {}, dict):
        raise TypeError("the dlami group's hosts are not a mapping")
    return dict(hosts or {})


def read(path: Path) -> dict[str, Any]:
    if not check(path).is_file():
        return {}
    return hosts_of(load(path.read_text()))


def followed(path: Path) -> Path:
    """The file a symlinked inventory names: dlcloud writes and locks it there, so the link
    stays a link, and a run given the link and one given the file share one lock."""
    return Path(os.path.realpath(path))


def write(path: Path, hosts: dict[str, Any]) -> None:
    path = followed(check(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary file of its own: two dlcloud runs writing at once never share one.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(descriptor, "w") as handle:
        handle.write(HEADER + dump(hosts))
    Path(temporary).chmod(0o644)
    Path(temporary).replace(path)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """One read-modify-write of the inventory at a time, across processes: no entry is lost."""
    path = followed(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with guard.held(
        path.parent / f".{path.name}.lock",
        f"another dlcloud to finish writing the inventory {path}",
    ):
        yield


def add_host(
    path: Path, name: str, instance: dict[str, Any], region: str, key_file: Path
) -> str | None:
    """Add or replace the host `name`; a same-named host of another region moves aside.

    Returns the name that host now has (`name.region`: dlcloud names have no dots), or None.
    """
    with locked(path):
        return _add_host(path, name, instance, region, key_file)


def _add_host(
    path: Path, name: str, instance: dict[str, Any], region: str, key_file: Path
) -> str | None:
    hosts = read(path)
    moved = None
    other = hosts.get(name)
    if isinstance(other, dict) and other.get("dlstation_region") not in (None, region):
        moved = f"{name}.{other['dlstation_region']}"
        hosts[moved] = hosts.pop(name)
    hosts[name] = {
        "ansible_host": instance.get("PublicIpAddress") or instance.get("PrivateIpAddress"),
        "ansible_user": "ubuntu",
        "ansible_ssh_private_key_file": str(key_file),
        "dlstation_instance_id": instance["InstanceId"],
        "dlstation_instance_type": instance["InstanceType"],
        "dlstation_region": region,
    }
    write(path, hosts)
    return moved


def remove_hosts(path: Path, instance_ids: set[str]) -> list[str]:
    with locked(path):
        return _remove_hosts(path, instance_ids)


def _remove_hosts(path: Path, instance_ids: set[str]) -> list[str]:
    hosts = read(path)
    gone = [n for n, v in hosts.items() if v.get("dlstation_instance_id") in instance_ids]
    if gone:
        write(path, {n: v for n, v in hosts.items() if n not in gone})
    return gone


def prune(path: Path, region: str, live_ids: set[str]) -> list[str]:
    """Remove the region's hosts whose instance ended (TTL, idle stop, console): their names."""
    hosts = read(path)
    ended = {
        v.get("dlstation_instance_id")
        for v in hosts.values()
        if v.get("dlstation_region") == region and v.get("dlstation_instance_id") not in live_ids
    }
    return remove_hosts(path, {i for i in ended if i})


def key_files(path: Path) -> dict[str, str]:
    """Key file -> a host that still names it."""
    return {
        str(v.get("ansible_ssh_private_key_file")): name
        for name, v in read(path).items()
        if v.get("ansible_ssh_private_key_file")
    }
