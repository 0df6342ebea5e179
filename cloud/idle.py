"""The idle watchdog seen from the user's side: its last decision, read back from the console,
and the command that sets a keep-alive on the instance."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from functools import cache
from importlib import resources
from pathlib import Path
from types import ModuleType

from cloud.aws import CloudError
from cloud.guard import IDLE_WATCHDOG_FILE, KEEPALIVE_COMMAND

PREFIX = "dlstation-idle: "
BUSY = re.compile(r"busy, idle (?:\d+h)?\d+m of (?:\d+h)?\d+m: (.*?)(?: \(note: .*\))?$")
IDLE = re.compile(r"(idle (?:\d+h)?\d+m of (?:\d+h)?\d+m)")
KEEPALIVE_LEFT = re.compile(r"^keep-alive: (\S+ left)")
CANNOT_TELL = re.compile(r"^([\w-]+): cannot tell for (\S+)")


@cache
def watchdog() -> ModuleType:
    """The watchdog script itself, so both sides read durations by the same rules."""
    path = Path(str(resources.files("cloud").joinpath(IDLE_WATCHDOG_FILE)))
    spec = importlib.util.spec_from_file_location("dlstation_idle_watchdog", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def summary(reasons: str) -> str:
    """'ssh: 1 session ...; keep-alive: 1h28m left' -> 'ssh, keep-alive 1h28m left'."""
    names: list[str] = []
    for reason in reasons.split("; "):
        if left := KEEPALIVE_LEFT.match(reason):
            name = f"keep-alive {left.group(1)}"
        elif unknown := CANNOT_TELL.match(reason):
            name = f"{unknown.group(1)} cannot tell for {unknown.group(2)}"
        else:
            name = reason.split(":", 1)[0]
        if name not in names:
            names.append(name)
    return ", ".join(names)


def last_decision(console: str) -> str | None:
    """'busy: ssh, gpu' or 'idle 12m of 30m' from the newest decision line; None if none."""
    lines = [line.split(PREFIX, 1)[1].strip() for line in console.splitlines() if PREFIX in line]
    for line in reversed(lines):
        if busy := BUSY.match(line):
            return f"busy: {summary(busy.group(1))}"
        if idle := IDLE.match(line):
            return idle.group(1)
    return None


def keepalive_remote(duration: str) -> list[str]:
    """The command to run on the instance; a usage error (exit 2) for a duration it refuses."""
    if duration != "off":
        try:
            watchdog().parse_duration(duration)
        except ValueError as error:
            raise CloudError(f"keepalive {error}", 2) from error
    return ["sudo", KEEPALIVE_COMMAND, duration]


def keepalive_argv(ssh: list[str], duration: str) -> list[str]:
    """ssh ... 'sudo dlstation-keepalive 2h': ssh runs the remote part through a shell."""
    return [*ssh, shlex.join(keepalive_remote(duration))]
