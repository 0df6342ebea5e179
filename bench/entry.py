"""The commands' entry points: their imports take seconds, and a signal while they load (or in
a command without handlers of its own) ends the command as the exit-code table says, with one
line, not a traceback from deep inside a library nor a silent death by the signal."""

from __future__ import annotations

import importlib
import signal
import sys
from types import FrameType

from bench.exitcodes import INTERRUPTED, TERMINATED

STOPPING = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """SIGTERM or SIGHUP outside a command's own handlers (a BaseException, as Ctrl-C's
    KeyboardInterrupt is, so no `except Exception` takes it for a failure)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def run(command: str, module: str) -> int:
    """Import module (a command's CLI) and run its main()."""
    for signum in STOPPING:
        signal.signal(signum, _stop)
    when = " while starting"
    try:
        main = importlib.import_module(module).main
        when = ""
        return int(main())
    except KeyboardInterrupt:
        print(f"{command}: interrupted{when}", file=sys.stderr)
        return INTERRUPTED
    except Stopped as stop:
        print(f"{command}: stopped by {stop}{when}", file=sys.stderr)
        return TERMINATED


def dlbench() -> int:
    return run("dlbench", "bench.cli")
