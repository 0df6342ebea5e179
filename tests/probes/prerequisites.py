"""Run by test_markers.py in its own pytest session (the name keeps it out of the suite)."""

from __future__ import annotations

import pytest


@pytest.mark.chromium
def test_needs_chromium() -> None:
    pass


@pytest.mark.provision
def test_provisions_this_machine() -> None:
    pass
