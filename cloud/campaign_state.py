"""A campaign's state: each instance type's host, status and instances, kept in state.json.

Running the same campaign again reads it back, so results already fetched are reused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from bench.exitcodes import USAGE
from cloud.aws import CloudError

STATE_FILE = "state.json"
DONE, REUSED, FAILED = "done", "reused", "failed"


@dataclass
class Host:
    """One instance type of the campaign, as it goes: kept in state.json for resuming."""

    instance_type: str
    host: str
    gpu: str = ""
    usd_per_hour: float | None = None
    status: str = "planned"
    reason: str | None = None
    verdict: str | None = None
    # Every instance launched for it: id, launched_at and ended_at (ISO), for the bill.
    instances: list[dict[str, str]] = field(default_factory=list)

    def hours(self, now: datetime) -> float:
        total = 0.0
        for record in self.instances:
            start = datetime.fromisoformat(record["launched_at"])
            end = datetime.fromisoformat(record["ended_at"]) if record.get("ended_at") else now
            total += max((end - start).total_seconds(), 0) / 3600
        return total

    def fail(self, reason: str) -> None:
        if self.status != FAILED:  # the first reason is the one that explains the rest
            self.status, self.reason = FAILED, reason


def load_state(folder: Path) -> dict[str, Host]:
    path = folder / STATE_FILE
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
        return {h["instance_type"]: Host(**h) for h in saved["hosts"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CloudError(
            f"{path} is damaged ({type(error).__name__}: {str(error)[:80]}); move it away to "
            "start the campaign afresh, or pick another --name",
            USAGE,
        ) from None


def save_state(folder: Path, hosts: dict[str, Host]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{STATE_FILE}.tmp"
    temporary.write_text(json.dumps({"hosts": [asdict(h) for h in hosts.values()]}, indent=1))
    temporary.replace(folder / STATE_FILE)


def complete_result(path: Path) -> bool:
    """A fetched result file whose runs all completed: resuming does not run it again."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    runs = document.get("runs") or []
    return document.get("status") == "complete" and all(r["status"] == "complete" for r in runs)
