"""The version matrix setup.yml installs from: per platform Python, Keras and backend versions.

The data lives in bench/facts/platforms.json, which the keras_env role reads too.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

PACKAGES = ("keras", "tensorflow", "jax", "torch")
BUILDS = ("gpu", "cpu")


@cache
def matrix() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("bench.facts").joinpath("platforms.json").read_text()
    )
    return data


def versions(python: str) -> dict[str, str]:
    """The row for one Python ("3.12"); KeyError names the Pythons the table has."""
    rows: dict[str, dict[str, str]] = matrix()["pythons"]
    if python not in rows:
        raise KeyError(f"no version row for Python {python}; the table has {', '.join(rows)}")
    return rows[python]


def requirements(python: str, build: str, backends: tuple[str, ...] | list[str]) -> list[str]:
    """pip requirements for a venv on that Python: Keras plus each backend's build."""
    row = versions(python)
    names: dict[str, str] = matrix()["builds"][build]
    return [f"keras=={row['keras']}"] + [f"{names[b]}=={row[b]}" for b in backends]


def for_ami_type(ami_type: str) -> tuple[str, str] | None:
    """(platform, Python) of the OS a Deep Learning AMI type runs, or None if not in the table."""
    for platform, facts in matrix()["platforms"].items():
        if facts.get("ami_type") == ami_type:
            return platform, facts["python"]
    return None


def describe_host(ami_type: str) -> str:
    """One line: the Python and versions setup.yml gives a host of this AMI type."""
    found = for_ami_type(ami_type)
    if found is None:
        return f"{ami_type} is not in dlstation's version table: setup.yml may not support it"
    platform, python = found
    row = versions(python)
    packages = ", ".join(f"{name} {row[name]}" for name in PACKAGES)
    return f"{platform.replace('-', ' ')}, Python {python}: setup.yml installs {packages}"
