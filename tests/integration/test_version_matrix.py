"""The version table setup.yml installs from: every row resolves on the real package index."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from bench.facts import platforms
from bench.training.backends import BACKENDS
from tests.conftest import REPO


def dlstation_dependencies() -> list[str]:
    pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    return platforms.project_dependencies(REPO / "pyproject.toml")


def resolve(python: str, build: str) -> tuple[str, str, dict[str, str] | str]:
    """What pip would install for that venv, as keras_env asks for it: {name: version} or errors."""
    table = platforms.matrix()
    requirements = platforms.requirements(python, build, BACKENDS) + dlstation_dependencies()
    glibc = platforms.lowest_glibc(table, python)
    return python, build, platforms.pip_resolve(python, glibc, requirements)


@pytest.mark.index
@pytest.mark.slow
def test_every_row_resolves_on_the_package_index() -> None:
    """Each Python's row, GPU and CPU builds, all its backends in one venv, two pip runs at once."""
    cells = [
        (python, build) for python in platforms.matrix()["pythons"] for build in ("gpu", "cpu")
    ]
    with ThreadPoolExecutor(platforms.PARALLEL) as pool:
        outcomes = list(pool.map(lambda cell: resolve(*cell), cells))
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
        for missing in platforms.unavailable(python):
            assert not any(name.startswith(missing) for name in found), f"{missing} on {python}"
        if build == "gpu":
            assert any(name.startswith("jax-cuda12") for name in found), (
                "jax[cuda12] lost its plugin"
            )
            assert any(name.startswith("nvidia-cudnn") for name in found), "no CUDA wheels"


@pytest.mark.index
def test_what_the_table_leaves_out_has_no_release() -> None:
    """Each backend the table calls unavailable has no stable wheel for that Python today."""
    table = platforms.matrix()
    claims = [(p, b) for p, left in table.get("unavailable", {}).items() for b in left]
    assert claims, "the table leaves nothing out: drop this test or the key"
    for python, backend in claims:
        name = platforms.distribution(table, "cpu", backend)
        found = platforms.pip_resolve(
            python, platforms.lowest_glibc(table, python), ["--no-deps", name]
        )
        if isinstance(found, dict):
            assert platforms.is_prerelease(found[name]), f"{name} {found[name]} exists for {python}"


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
                if package not in row:  # no release for that Python: the table says why
                    continue
                assert requirement.specifier.contains(row[package]), (
                    f"extra {extra}: {requirement} excludes {package} {row[package]}, "
                    f"Python {python}'s version"
                )
            checked.add(package)
    assert checked == {"keras", *BACKENDS}
