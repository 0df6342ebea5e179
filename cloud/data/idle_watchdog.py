#!/usr/bin/env python3
"""dlstation idle stop, run every minute on the instance: power off once nothing used it for long.

Standard library only: it runs under the image's /usr/bin/python3, outside any venv.
Idle means, for the whole period: no GPU busy, no login session, no busy or recently active
Jupyter kernel, no dlbench or ansible process. A check that cannot run counts as busy.
Every decision is one line on stdout (the journal, and the console that `dlcloud list` reads).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

PREFIX = "dlstation-idle:"
GPU_BUSY_PERCENT = float(os.environ.get("DLSTATION_IDLE_GPU_PERCENT", "5"))
BUSY_PROGRAMS = ("dlbench", "ansible")
COMMAND_TIMEOUT_S = 20

Verdict = tuple[str | None, float | None]  # (why it is busy, or None; last activity epoch)


def gpu_check() -> Verdict:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"gpu: cannot run nvidia-smi ({error})", None
    if done.returncode != 0:
        return f"gpu: nvidia-smi failed ({done.stderr.strip()[:120]})", None
    busy = []
    for line in done.stdout.strip().splitlines():
        index, _, value = line.partition(",")
        try:
            percent = float(value)
        except ValueError:
            return f"gpu: unreadable nvidia-smi line {line!r}", None
        if percent >= GPU_BUSY_PERCENT:
            busy.append(f"GPU {index.strip()} at {percent:g}%")
    return (f"gpu: {', '.join(busy)}" if busy else None), None


def session_check() -> Verdict:
    try:
        done = subprocess.run(
            ["who"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"ssh: cannot run who ({error})", None
    if done.returncode != 0:
        return "ssh: who failed", None
    sessions = [line for line in done.stdout.splitlines() if line.strip()]
    return (f"ssh: {len(sessions)} session(s) open" if sessions else None), None


def jupyter_token(path: Path) -> str | None:
    """JUPYTER_TOKEN from the service's environment file, if there is one."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "JUPYTER_TOKEN":
            return value.strip().strip("'\"")
    return None


def parse_stamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


def read_kernels(base: str, token: str | None) -> list[dict[str, str]] | str:
    """The kernels JupyterLab reports, or why they could not be read."""
    request = urllib.request.Request(f"{base}/api/kernels")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=COMMAND_TIMEOUT_S) as response:
            kernels = json.loads(response.read())
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return []  # no JupyterLab listening: no kernel can be busy
        return f"jupyter: cannot read {base}/api/kernels ({error})"
    except (OSError, ValueError) as error:
        return f"jupyter: cannot read {base}/api/kernels ({error})"
    if not isinstance(kernels, list):
        return "jupyter: unexpected answer from /api/kernels"
    return kernels


def jupyter_check() -> Verdict:
    base = os.environ.get("DLSTATION_JUPYTER_URL", "http://127.0.0.1:8888").rstrip("/")
    token_file = Path(
        os.environ.get("DLSTATION_JUPYTER_TOKEN_FILE", "/opt/dlstation/jupyter/token.env")
    )
    try:
        kernels = read_kernels(base, jupyter_token(token_file))
    except OSError as error:
        return f"jupyter: cannot read the token ({error})", None
    if isinstance(kernels, str):
        return kernels, None
    latest = None
    for kernel in kernels:
        state = kernel.get("execution_state")
        if state in ("busy", "starting"):
            return f"jupyter: kernel {kernel.get('id', '?')} is {state}", None
        stamp = parse_stamp(kernel.get("last_activity", ""))
        if stamp is not None:
            latest = stamp if latest is None else max(latest, stamp)
    return None, latest


def process_check() -> Verdict:
    root = Path(os.environ.get("DLSTATION_IDLE_PROC", "/proc"))
    try:
        entries = [entry for entry in root.iterdir() if entry.name.isdigit()]
    except OSError as error:
        return f"processes: cannot list {root} ({error})", None
    for entry in entries:
        if entry.name == str(os.getpid()):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # the process ended meanwhile
        for arg in argv[:2]:
            program = Path(arg.decode(errors="replace")).name
            if program.startswith(BUSY_PROGRAMS):
                return f"processes: {program} running (pid {entry.name})", None
    return None, None


CHECKS = (gpu_check, session_check, jupyter_check, process_check)


def minutes(seconds: float) -> str:
    return f"{max(seconds, 0) / 60:.0f}m"


def decide(now: float, period: float, state: Path) -> bool:
    """One round: log the decision and return True when the machine should power off."""
    reasons = []
    activity = []
    for check in CHECKS:
        reason, last_active = check()
        if reason:
            reasons.append(reason)
        if last_active is not None:
            activity.append(last_active)
    if reasons:
        state.write_text(f"{now}\n")
        print(f"{PREFIX} busy, idle 0m of {minutes(period)}: {'; '.join(reasons)}", flush=True)
        return False
    try:
        idle_since = float(state.read_text().strip())
    except (OSError, ValueError):
        idle_since = now
        state.write_text(f"{now}\n")
    idle_since = max([idle_since, *activity])
    idle = now - idle_since
    if idle >= period:
        print(
            f"{PREFIX} idle {minutes(idle)} of {minutes(period)}: no GPU use, no session, "
            "no busy kernel, no dlbench/ansible; powering off",
            flush=True,
        )
        return True
    print(f"{PREFIX} idle {minutes(idle)} of {minutes(period)}: nothing in use", flush=True)
    return False


def main() -> int:
    period = float(os.environ["DLSTATION_IDLE_SECONDS"])
    state = Path(os.environ.get("DLSTATION_IDLE_STATE", "/run/dlstation-idle-since"))
    now = float(os.environ.get("DLSTATION_IDLE_NOW") or time.time())
    if not decide(now, period, state):
        return 0
    command = shlex.split(os.environ.get("DLSTATION_IDLE_POWEROFF", "systemctl poweroff"))
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
