"""dlcloud's entry point: a Ctrl-C while boto3 loads is an ordinary stop (see bench.entry)."""

from __future__ import annotations

from bench import entry


def dlcloud() -> int:
    return entry.run("dlcloud", "cloud.cli")
