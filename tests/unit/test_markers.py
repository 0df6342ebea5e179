"""Markers for missing prerequisites: a skip with the reason here, a failure under CI=true."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import PROVISION_ENV, REPO

PYTEST = ("-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-o", "addopts=")


def session(**env: str) -> str:
    """pytest over the probe file, Chromium out of reach (an empty PATH), CI unset."""
    base = {k: v for k, v in os.environ.items() if k not in ("CI", PROVISION_ENV)}
    done = subprocess.run(
        [sys.executable, *PYTEST, "tests/probes/prerequisites.py"],
        cwd=REPO,
        env={**base, "PATH": "", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.stdout


def test_missing_prerequisites_skip_with_the_reason_on_a_contributors_machine() -> None:
    out = session()
    assert "2 skipped" in out, out
    assert "chromium not installed" in out
    assert f"run with {PROVISION_ENV}=1" in out


def test_under_ci_a_missing_prerequisite_fails() -> None:
    out = session(CI="true")
    assert "CI requires this prerequisite: chromium not installed" in out, out
    assert "1 skipped, 1 error" in out, "provisioning stays opt-in under CI too"


def test_provisioning_runs_when_asked() -> None:
    out = session(**{PROVISION_ENV: "1"})
    assert "1 passed, 1 skipped" in out, out
