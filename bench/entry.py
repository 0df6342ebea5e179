"""The commands' entry points: their imports take seconds, and a signal while they load (or in
a command without handlers of its own) ends the command as the exit-code table says, with one
line, not a traceback from deep inside a library nor a silent death by the signal. Standard
output that fails (a reader that stopped, a full disk) is an outcome too, never a crash."""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
from types import FrameType
from typing import Any, TextIO

from bench.exitcodes import FAILED, INTERRUPTED, TERMINATED, USAGE

STOPPING = (signal.SIGTERM, signal.SIGHUP)
# Standard output errors that end the output, not the work: a full disk or quota, a file-size
# limit (ulimit -f), an I/O error, a descriptor open for reading only (`1</dev/null`).
DROPPED = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EBADF)


class Stopped(BaseException):
    """SIGTERM or SIGHUP outside a command's own handlers (a BaseException, as Ctrl-C's
    KeyboardInterrupt is, so no `except Exception` takes it for a failure)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class GuardedStdout:
    """sys.stdout that never raises into the command: a reader that stopped (`| head -3`) gets
    nothing more, quietly, as with cat; a full disk drops the rest and is said at the end. The
    command finishes its work and its clean-up (a launch's rollback prints as it goes)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.failed: str | None = None  # why output was dropped, when it was not a closed pipe

    def write(self, text: str) -> int:
        self._guarded(self.stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._guarded(self.stream.flush)

    def _guarded(self, call: Any, *args: Any) -> None:
        try:
            call(*args)
        except OSError as error:
            if not isinstance(error, BrokenPipeError) and error.errno not in DROPPED:
                raise
            if not isinstance(error, BrokenPipeError):
                self.failed = self.failed or error.strerror or str(error)
            # Everything after goes to /dev/null, Python's flush at exit included.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def run(command: str, module: str) -> int:
    """Import module (a command's CLI) and run its main()."""
    for signum in STOPPING:
        signal.signal(signum, _stop)
    if sys.stdout is None:  # started with `>&-`: whatever it printed would vanish unsaid
        print(
            f"{command}: error: standard output is closed; send it to a file or /dev/null",
            file=sys.stderr,
        )
        return USAGE
    stdout = GuardedStdout(sys.stdout)
    sys.stdout = stdout
    when = " while starting"
    try:
        main = importlib.import_module(module).main
        when = ""
        code = int(main())
    except SystemExit as stop:  # argparse's --help and its refusals
        if not isinstance(stop.code, int | None):
            raise
        code = stop.code or 0
    except KeyboardInterrupt:
        print(f"{command}: interrupted{when}", file=sys.stderr)
        return INTERRUPTED
    except Stopped as stop:
        print(f"{command}: stopped by {stop}{when}", file=sys.stderr)
        return TERMINATED
    stdout.flush()  # here, where a full disk still gets its line and its code
    if stdout.failed:
        print(f"{command}: cannot write to standard output: {stdout.failed}", file=sys.stderr)
        return code or FAILED  # a verdict or a failure stays; a success was not delivered
    return code


def dlbench() -> int:
    return run("dlbench", "bench.cli")
