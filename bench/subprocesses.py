"""The one way both tools run a child process: output streamed to a log, stopped cleanly.

A child is stopped with SIGTERM, then SIGKILL after a grace period: on an interrupt, on a
timeout, or when its reader goes away, so no child outlives the command that started it.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

GRACE_S = 30.0  # how long a child may take to stop after SIGTERM before SIGKILL


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str], grace_s: float = GRACE_S) -> int:
    """SIGTERM, then SIGKILL if it is still there after grace_s; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def run_streamed(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log: Path,
    on_line: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
    grace_s: float = GRACE_S,
) -> int:
    """Run argv, its output appended to log and handed line by line to on_line; the exit code.

    Raises subprocess.TimeoutExpired past timeout_s; whatever interrupts the reading (a
    signal, on_line raising) stops the child first.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(f"$ {shlex.join(argv)}\n")
        handle.flush()
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            process.terminate()

        timer = threading.Timer(timeout_s, expire) if timeout_s else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                handle.write(line)
                if on_line is not None:
                    on_line(line)
            code = process.wait()
        finally:
            if timer is not None:
                timer.cancel()
            stop(process, grace_s)
        if expired.is_set():
            raise subprocess.TimeoutExpired(argv, timeout_s or 0)
        return code
