"""Ctrl-C, SIGTERM (CI cancel, `timeout`) and SIGHUP (closed terminal) stop dlcloud one way.

Each raises Interrupted in the main thread, so the `finally` and `except` blocks that terminate
what a command started run for all three; signals that arrive during that cleanup wait for it.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from bench import exitcodes

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop signal, with what the command terminated on its way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.terminated: list[str] = []  # "i-... (name)" for each instance it terminated
        self.cleaned = False  # True once the command's own cleanup ran

    @property
    def exit_code(self) -> int:
        return exitcodes.INTERRUPTED if self.signum == signal.SIGINT else exitcodes.TERMINATED

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def summary(self) -> str:
        """What the user reads last: exactly what was terminated, never a blanket promise."""
        head = f"interrupted by {self.signal_name}"
        if self.terminated:
            return f"{head}; terminated {', '.join(self.terminated)}"
        if self.cleaned:
            return f"{head}; it had no instance running, nothing to terminate"
        return head


def as_interrupted(error: KeyboardInterrupt) -> Interrupted:
    """A plain KeyboardInterrupt (handlers not installed) read as SIGINT."""
    return error if isinstance(error, Interrupted) else Interrupted(signal.SIGINT)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _install(handler: Any) -> dict[int, Any] | None:
    """Set handler for the three signals; None outside the main thread (no handlers there)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return {signum: signal.signal(signum, handler) for signum in SIGNALS}


def _restore(previous: dict[int, Any] | None) -> None:
    for signum, handler in (previous or {}).items():
        signal.signal(signum, handler)


@contextmanager
def raised() -> Iterator[None]:
    """For a command's duration, SIGINT, SIGTERM and SIGHUP raise Interrupted."""
    previous = _install(_raise)
    try:
        yield
    finally:
        _restore(previous)


@contextmanager
def deferred() -> Iterator[None]:
    """Cleanup must finish: a signal arriving meanwhile waits until it has, then counts.

    When cleanup runs because of an interrupt already, the later ones are only noted.
    """
    already = sys.exc_info()[1] is not None
    pending: list[int] = []
    previous = _install(lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        _restore(previous)
        if pending and not already:
            raise Interrupted(pending[0])
