"""The one seam for worker processes: spawn `python -m bench.training.worker` and read its events.

Events travel as JSON lines on a pipe of their own, so nothing a library prints to stdout
can be mistaken for one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bench import subprocesses

EVENT_FD_ENV = "DLBENCH_EVENT_FD"
_TERMINATE_GRACE_S = 5.0


class EventWriter:
    """The worker's side: one JSON object per line, flushed at once."""

    def __init__(self, fd: int) -> None:
        self.stream = os.fdopen(fd, "w", buffering=1)

    def __call__(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()


class WorkerProcess:
    """A running worker: its events, its log, and a way to stop it."""

    def __init__(self, job: dict[str, Any], env: dict[str, str], log_path: Path) -> None:
        read_fd, write_fd = os.pipe()
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        child_env = {**os.environ, **env, EVENT_FD_ENV: str(write_fd)}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bench.training.worker", json.dumps(job)],
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            # Its own session: a terminal's Ctrl-C reaches only us, and we stop it cleanly.
            start_new_session=True,
        )
        os.close(write_fd)
        self._events: IO[str] = os.fdopen(read_fd, "r")

    def events(self) -> Iterator[dict[str, Any]]:
        """Events until the worker closes its end (normally by exiting)."""
        for raw in self._events:
            if line := raw.strip():
                yield json.loads(line)

    def wait(self) -> int:
        code = self.popen.wait()
        self._close()
        return code

    def terminate(self) -> None:
        """SIGTERM, then SIGKILL if it is still there after a grace period."""
        subprocesses.stop(self.popen, _TERMINATE_GRACE_S)
        self._close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _close(self) -> None:
        self._events.close()
        self._log.close()
