"""JAX's persistent compilation cache as the compiled mode sets it up: damage costs only time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

COMPILE = """
import sys
from pathlib import Path
from bench.training.modes.compiled import enable_compilation_cache
enable_compilation_cache(Path(sys.argv[1]))
import jax, jax.numpy as jnp
print(float(jax.jit(lambda x: (x * 2.0).sum())(jnp.arange(8.0))))
"""


def compile_with_cache(folder: Path) -> subprocess.CompletedProcess[str]:
    """A fresh process each time: nothing but the folder carries over."""
    return subprocess.run(
        [sys.executable, "-c", COMPILE, str(folder)],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_damaged_cache_entries_are_recompiled(tmp_path: Path) -> None:
    folder = tmp_path / "jax-compilation"
    first = compile_with_cache(folder)
    assert first.returncode == 0, first.stderr
    entries = [p for p in folder.rglob("*") if p.is_file()]
    assert entries, "the first run filled the cache"
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2] or b"x")
    second = compile_with_cache(folder)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == first.stdout.strip() == "56.0"


@pytest.mark.slow
def test_unusable_cache_folder_turns_the_cache_off(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = compile_with_cache(blocker / "jax-compilation")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "56.0"
    assert "dlbench: JAX compilation cache off" in done.stderr
