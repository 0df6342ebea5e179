"""Exit codes of every dlbench and dlcloud command: one per outcome, a crash never a verdict."""

from __future__ import annotations

OK = 0  # the command did what it was asked; verify: PASS
FAILED = 1  # a run failed, an AWS step failed; verify: FAIL
USAGE = 2  # bad input, refused before any work (the message says what to do)
WARN = 3  # verify: WARN (works, but something is worth a look)
INTERNAL = 70  # a bug in dlstation itself (BSD's EX_SOFTWARE): a traceback, never a verdict
INTERRUPTED = 130  # Ctrl-C (SIGINT): partial results are kept
TERMINATED = 143  # SIGTERM or SIGHUP: the same clean-up as Ctrl-C

TABLE: dict[int, str] = {
    OK: "success; verify: PASS",
    FAILED: "a run or an AWS step failed; verify: FAIL",
    USAGE: "bad input, refused before any work",
    WARN: "verify: WARN",
    INTERNAL: "internal error (a bug in dlstation: please report the traceback)",
    INTERRUPTED: "interrupted by Ctrl-C",
    TERMINATED: "stopped by SIGTERM or SIGHUP",
}
