"""The version table setup.yml installs from: every row resolves on the real package index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from bench.facts import platforms
from bench.training.backends import BACKENDS
from tests.conftest import REPO

# Each pip call resolves one whole venv from the wheels' metadata alone: the index's metadata
# files where it serves them, else HTTP range requests into the wheel (pip's fast-deps), never
# a whole wheel. Two at a time: more made each call slower here, not the whole faster.
PARALLEL = 2
# The public index itself: no local mirrors, wheel folders or constraints from pip's configuration.
INDEX_URL = "https://pypi.org/simple"


def lowest_glibc(python: str) -> tuple[int, int]:
    """The oldest C library among the platforms whose Python this is: wheels must run there."""
    found = [
        tuple(int(part) for part in facts["glibc"].split("."))
        for facts in platforms.matrix()["platforms"].values()
        if facts["python"] == python
    ]
    assert found, f"Python {python} has a row but no platform in the table uses it"
    major, minor = min(found)
    return major, minor


def platform_tags(glibc: tuple[int, int]) -> list[str]:
    """pip --platform values a Linux x86_64 host with that glibc accepts, as pip lists them."""
    major, newest = glibc
    tags = [f"manylinux_{major}_{minor}_x86_64" for minor in range(newest, 4, -1)]
    return [*tags, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def dlstation_dependencies() -> list[str]:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    project: dict[str, object] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dependencies = project["dependencies"]
    assert isinstance(dependencies, list)
    return [str(d) for d in dependencies]


def resolve(python: str, build: str, target: Path) -> tuple[str, str, dict[str, str] | str]:
    """What pip would install for that venv: {name: version}, or its error text."""
    requirements = platforms.requirements(python, build, BACKENDS) + dlstation_dependencies()
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--only-binary=:all:",
        "--python-version",
        python,
        *(f"--platform={tag}" for tag in platform_tags(lowest_glibc(python))),
        "--target",
        str(target / f"{python}-{build}"),
        "--quiet",
        "--report",
        "-",
        "--disable-pip-version-check",
        "--use-feature=fast-deps",
        "--index-url",
        INDEX_URL,
        *requirements,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=env
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
        return python, build, "\n".join(errors[-3:]) or done.stderr[-1000:]
    report = json.loads(done.stdout)
    installed: dict[str, str] = {
        str(canonicalize_name(item["metadata"]["name"])): item["metadata"]["version"]
        for item in report["install"]
    }
    return python, build, installed


@pytest.mark.index
@pytest.mark.slow
def test_every_row_resolves_on_the_package_index(tmp_path: Path) -> None:
    """Each Python's row, GPU and CPU builds, all backends in one venv, as keras_env installs it."""
    cells = [
        (python, build) for python in platforms.matrix()["pythons"] for build in ("gpu", "cpu")
    ]
    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(lambda cell: resolve(cell[0], cell[1], tmp_path), cells))
    failures = [
        f"Python {python} {build}: {found}"
        for python, build, found in outcomes
        if isinstance(found, str)
    ]
    assert not failures, "\n".join(failures)
    for python, build, found in outcomes:
        assert isinstance(found, dict)
        row = platforms.versions(python)
        distributions = {"tensorflow": "tensorflow" if build == "gpu" else "tensorflow-cpu"}
        for package, version in row.items():
            name = distributions.get(package, package)
            assert found.get(name) == version, f"Python {python} {build}: {name} {found.get(name)}"
        if build == "gpu":
            assert any(name.startswith("jax-cuda12") for name in found), (
                "jax[cuda12] lost its plugin"
            )
            assert any(name.startswith("nvidia-cudnn") for name in found), "no CUDA wheels"


def test_requires_python_is_the_tables_pythons() -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pythons = sorted(platforms.matrix()["pythons"], key=lambda v: tuple(map(int, v.split("."))))
    supported = SpecifierSet(project["requires-python"])
    assert all(supported.contains(f"{python}.0") for python in pythons)
    major, minor = map(int, pythons[0].split("."))
    assert not supported.contains(f"{major}.{minor - 1}.0"), (
        "requires-python admits a Python below the table"
    )


def test_backend_extras_admit_every_row() -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    package_of = {"keras": "keras", "tensorflow": "tensorflow", "tensorflow-cpu": "tensorflow"}
    package_of |= {"jax": "jax", "torch": "torch"}
    checked = set()
    for extra in ("tensorflow", "tensorflow-cuda", "tensorflow-cpu", "jax", "torch"):
        for text in extras[extra]:
            requirement = Requirement(text)
            package = package_of[requirement.name]
            for python, row in platforms.matrix()["pythons"].items():
                assert requirement.specifier.contains(row[package]), (
                    f"extra {extra}: {requirement} excludes {package} {row[package]}, "
                    f"Python {python}'s version"
                )
            checked.add(package)
    assert checked == {"keras", *BACKENDS}
