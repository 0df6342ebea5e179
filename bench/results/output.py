"""Where a result goes: a regular file that no other running dlbench holds, claimed before
training starts.

A device, FIFO or link is never replaced or followed (`--output /dev/null` is refused), nor a
non-empty file that is not a dlbench result. Default names are
made unique by an exclusive create, adding `-2`, `-3`, ... when a run started in the same
second took the name. An explicit `--output` may replace an earlier run's finished file (a
playbook re-runs to the same path), but never one that a running dlbench holds: each run
holds a lock beside it until it exits.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import stat
import tempfile
from datetime import datetime
from pathlib import Path

from bench.results import document

# The files this process claimed, for whoever stops it before they receive a result.
CLAIMED: list[Path] = []
# Enough for any number of runs started in one second on one machine.
MAX_SUFFIX = 10_000


class OutputError(ValueError):
    """The result cannot go where it was asked to; the message says what to pass instead."""


class NoRoomError(OSError):
    """The result's folder has no room for even its first bytes (a full disk or quota)."""


# Errors that say the disk, not the path asked for, is the problem: the run fails (exit 1).
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


def default_name(host: str, backend: str, mode: str, now: datetime) -> str:
    """dlbench-HOST-BACKEND-MODE-YYYYmmddTHHMMSSZ.json (UTC; `now` must be aware)."""
    return f"dlbench-{host}-{backend}-{mode}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"


def refuse_existing(path: Path, option: str) -> None:
    """OutputError when path is a folder, or exists and is not a regular file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise OutputError(f"{option} {path} is a folder; pass a file path, or the folder as --out")
    if not stat.S_ISREG(mode):
        raise OutputError(
            f"{option} {path} exists and is not a regular file (a device, FIFO or link); "
            "dlbench never replaces it: pass a new file path"
        )


def refuse_foreign(path: Path, option: str) -> None:
    """OutputError when path is a non-empty regular file that is not a dlbench result."""
    try:
        if os.lstat(path).st_size == 0:
            return
        found = document.read_json(path)
    except FileNotFoundError:
        return
    except (OSError, document.ResultError):
        found = None
    if not (isinstance(found, dict) and found.get("tool") == "dlbench"):
        raise OutputError(
            f"{option} {path} exists and is not a dlbench result; dlbench never replaces it: "
            "pass a new file path"
        )


# What a claimed file holds until the run's first write: valid JSON from its first moment, so a
# run stopped before it wrote (a signal, a kill) leaves a file that says so, never a blank one.
STARTING = (
    json.dumps(
        {
            "tool": "dlbench",
            "schema_version": document.SCHEMA_VERSION,
            "status": "incomplete",
            "incomplete_reason": "starting",
        }
    )
    + "\n"
)


def _create(path: Path) -> bool:
    """Create path holding STARTING, only if nothing is there: the whole file appears at once
    (a hard link of a finished temp file), and of racing runs exactly one link succeeds."""
    with document.signals_held():
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(STARTING)
                os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.link(name, path, follow_symlinks=False)
        except FileExistsError:
            return False
        finally:
            Path(name).unlink()
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def hold(path: Path, option: str = "--output") -> None:
    """Lock path for the rest of this process, or OutputError if another dlbench holds it."""
    lock = lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputError(
                f"{option} {path} is being written by another dlbench run (pid {holder}); "
                "wait for it, or pass another path"
            ) from None
        # The holder before us may have removed the lock file after we opened it: ours is
        # only a lock if the name still points at it.
        try:
            current = lock.lstat().st_ino
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current == opened.st_ino:
            if opened.st_nlink != 1 or not stat.S_ISREG(opened.st_mode):
                os.close(fd)  # a hard link planted at the lock's name: another file's bytes
                raise OutputError(
                    f"{lock} is not a lock dlbench made (a hard link to another file); "
                    "remove it, or pass another path"
                )
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        _let_go(lock, fd)  # a full disk: the lock holds without the pid, but is not left behind
        raise
    atexit.register(_let_go, lock, fd)


def _let_go(lock: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then close: the next run takes a new one."""
    try:
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def claim(path: Path, *, unique: bool, option: str = "--output") -> Path:
    """The result file's path, created if absent, before the run's first write.

    unique: the name is ours to vary (`--out`'s default names): NAME-2.json etc. when taken.
    Otherwise path is locked for this process; of two runs given the same path, the second
    gets an OutputError.
    """
    refuse_existing(path, option)
    try:
        if not unique:
            hold(path, option)
            refuse_existing(path, option)  # it may have changed while we waited for nothing
            refuse_foreign(path, option)
            document.write_text_atomic(path, STARTING)
            CLAIMED.append(path)
            return path
        for n in range(1, MAX_SUFFIX):
            candidate = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
            if _create(candidate):
                CLAIMED.append(candidate)
                return candidate
    except OSError as error:
        if error.errno in NO_ROOM:
            why = f"{os.strerror(error.errno)}; the run stopped and no result was written"
            raise NoRoomError(error.errno, why) from None
        raise OutputError(
            f"cannot create {path} ({error.strerror or error}); pass --out with a writable folder"
        ) from None
    raise OutputError(f"no free name beside {path}; clear old results from {path.parent}")


def release(path: Path) -> None:
    """Remove a claimed file that never received a result (the run stopped first)."""
    try:
        if os.lstat(path).st_size <= len(STARTING) and path.read_text() in ("", STARTING):
            path.unlink()
    except OSError:
        return
