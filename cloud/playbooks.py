"""Running the clone's playbooks for dlcloud: the command line, the environment, the events.

Ansible reports through the jsonl callback, one event per line; what a campaign needs from
an event (the step it is in, a host's verdict, a host's failure) is read here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLONE = Path(__file__).resolve().parent.parent
VERDICT = re.compile(r"verdict: (PASS|WARN|FAIL)")
FAILURES = ("v2_runner_on_failed", "v2_runner_on_unreachable")


def unsafe(value: Any) -> Any:
    """A value Ansible takes as data, never as a template: each string marked unsafe."""
    if isinstance(value, str):
        return {"__ansible_unsafe": value}
    if isinstance(value, list):
        return [unsafe(item) for item in value]
    return value


def argv(
    playbook: str, inventory: Path, hosts: list[str], variables: dict[str, Any], extra: list[str]
) -> list[str]:
    """ansible-playbook of this venv on exactly these hosts; the user's own arguments last."""
    executable = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    return [
        executable or "ansible-playbook",
        "-i",
        str(inventory),
        "--limit",
        ",".join(hosts),
        str(CLONE / playbook),
        "-e",
        json.dumps(variables),
        *extra,
    ]


def environment() -> dict[str, str]:
    return {
        **os.environ,
        # Ansible never flushes its output: unbuffered, each event arrives as it happens,
        # so progress (and a signal sent on seeing it) meets the step it names.
        "PYTHONUNBUFFERED": "1",
        "ANSIBLE_CONFIG": str(CLONE / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.jsonl",
        "ANSIBLE_NOCOLOR": "1",
    }


def event_of(line: str) -> dict[str, Any] | None:
    """The jsonl event on this output line, or None for anything else Ansible printed."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def phase_of(event: dict[str, Any]) -> str | None:
    """The role (setup.yml) or task (bench.yml) a task-start event enters; else None."""
    if event.get("_event") != "v2_playbook_on_task_start":
        return None
    return str((event.get("task") or {}).get("name", "")).split(" : ", 1)[0]


@dataclass(frozen=True)
class HostResult:
    """What one event says about one host."""

    host: str
    verdict: str | None  # of `dlbench verify`, when this task ran it
    failure: str | None  # "task: why (exit N)" when the task failed there, not ignored


def host_results(step: str, event: dict[str, Any]) -> list[HostResult]:
    kind = event.get("_event", "")
    task = (event.get("task") or {}).get("name", "")
    found = []
    for host, result in (event.get("hosts") or {}).items():
        verdict = VERDICT.search(result.get("stdout") or "")
        failure = None
        ignored = result.get("ignore_errors") or event.get("ignore_errors")
        if kind in FAILURES and not ignored:
            stderr = str(result.get("stderr") or "").strip()
            why = stderr.splitlines()[-1] if stderr else str(result.get("msg") or "failed")
            if result.get("rc") not in (None, 0):
                why += f" (exit {result['rc']})"
            what = "unreachable" if kind.endswith("unreachable") else task
            failure = f"{step}: {what}: {why.strip()[:300]}"
        found.append(
            HostResult(
                host, verdict.group(1) if verdict and "dlbench verify" in task else None, failure
            )
        )
    return found
