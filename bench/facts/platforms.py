"""The version matrix setup.yml installs from: per platform Python, Keras and backend versions.

The data lives in bench/facts/platforms.json, which the keras_env role reads too (setup.yml
passes its path as dlstation_platforms_file). `python -m bench.facts.platforms refresh`
(`make versions`) resolves it again against the package index and prints what moved.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from bench.exitcodes import FAILED, OK, USAGE

PACKAGES = ("keras", "tensorflow", "jax", "torch")
BACKENDS = PACKAGES[1:]
BUILDS = ("gpu", "cpu")
TABLE_FILE = Path(__file__).with_name("platforms.json")
# The public index itself: no local mirrors, wheel folders or constraints from pip's configuration.
INDEX_URL = "https://pypi.org/simple"
# Each pip call resolves one whole venv from metadata alone; two at a time, more were slower.
PARALLEL = 2


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


def unavailable(python: str) -> dict[str, str]:
    """Backends the index has no release of for that Python, each with why."""
    left: dict[str, dict[str, str]] = matrix().get("unavailable", {})
    return left.get(python, {})


def requirements(python: str, build: str, backends: Iterable[str]) -> list[str]:
    """pip requirements for a venv on that Python: Keras plus each available backend's build."""
    row = versions(python)
    names: dict[str, str] = matrix()["builds"][build]
    return [f"keras=={row['keras']}"] + [f"{names[b]}=={row[b]}" for b in backends if b in row]


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
    packages = ", ".join(f"{name} {row[name]}" for name in PACKAGES if name in row)
    missing = "".join(f"; no {name}" for name in unavailable(python))
    return f"{platform.replace('-', ' ')}, Python {python}: setup.yml installs {packages}{missing}"


class RefreshError(RuntimeError):
    """The index gave no installable set for a Python: the table stays as it was."""


# --- Resolving against the index ---------------------------------------------------------------


def lowest_glibc(table: dict[str, Any], python: str) -> tuple[int, int]:
    """The oldest C library among the platforms whose Python this is: wheels must run there."""
    found = [
        (int(facts["glibc"].split(".")[0]), int(facts["glibc"].split(".")[1]))
        for facts in table["platforms"].values()
        if facts["python"] == python
    ]
    if not found:
        raise KeyError(f"Python {python} has a row but no platform in the table uses it")
    return min(found)


def platform_tags(glibc: tuple[int, int]) -> list[str]:
    """pip --platform values a Linux x86_64 host with that glibc accepts, as pip lists them."""
    major, newest = glibc
    tags = [f"manylinux_{major}_{minor}_x86_64" for minor in range(newest, 4, -1)]
    return [*tags, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def pip_command(python: str, glibc: tuple[int, int], requirements: Sequence[str]) -> list[str]:
    """pip's dry run of one venv for that Python and C library, reporting what it would install."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--isolated",
        "--dry-run",
        "--ignore-installed",
        "--only-binary=:all:",
        "--python-version",
        python,
        *(f"--platform={tag}" for tag in platform_tags(glibc)),
        "--target",
        tempfile.gettempdir() + f"/dlstation-resolve-{python}",
        "--quiet",
        "--report",
        "-",
        "--disable-pip-version-check",
        "--index-url",
        INDEX_URL,
        *requirements,
    ]


def pip_environment() -> dict[str, str]:
    """This machine's pip settings left out: the table is for users' machines, not this one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    if os.environ.get("PIP_CERT"):  # a private CA bundle reaches the index, it caps nothing
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    return env


# The index's answer for (Python, glibc, requirements), and its newest pre-release of a package.
Resolver = Callable[[str, tuple[int, int], Sequence[str]], "dict[str, str] | str"]
Prerelease = Callable[[str, str, tuple[int, int]], "str | None"]


def pip_resolve(
    python: str, glibc: tuple[int, int], requirements: Sequence[str]
) -> dict[str, str] | str:
    """{distribution: version} pip would install, or pip's error lines."""
    done = subprocess.run(
        pip_command(python, glibc, requirements),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=pip_environment(),
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
        return "\n".join(errors[-3:]) or done.stderr[-1000:]
    report = json.loads(done.stdout)
    return {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in report["install"]
    }


def newest_prerelease(package: str, python: str, glibc: tuple[int, int]) -> str | None:
    """The newest pre-release of package with a wheel for that Python, or None."""
    found = pip_resolve(python, glibc, ["--pre", "--no-deps", package])
    if isinstance(found, str):
        return None
    return found.get(package)


def distribution(table: dict[str, Any], build: str, package: str) -> str:
    """The distribution name pip reports for a package's build (tensorflow-cpu, jax, ...)."""
    if package not in table["builds"][build]:
        return package
    return str(table["builds"][build][package]).split("[")[0]


def resolve_python(
    table: dict[str, Any],
    python: str,
    dependencies: Sequence[str],
    resolver: Resolver | None = None,
    prerelease: Prerelease | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """(row, unavailable) for one Python: the newest versions installable together, both builds."""
    resolver = resolver or pip_resolve
    prerelease = prerelease or newest_prerelease
    glibc = lowest_glibc(table, python)
    left_out: dict[str, str] = {}
    for backend in BACKENDS:
        name = distribution(table, "cpu", backend)
        alone = resolver(python, glibc, ["--no-deps", name])
        # pip takes a pre-release when there is nothing else: that is no release for users.
        if isinstance(alone, str) or is_prerelease(alone.get(name, "")):
            pre = prerelease(name, python, glibc)
            why = f"no stable {backend} wheel for Python {python} on the index"
            left_out[backend] = why + (f" (newest pre-release: {pre})" if pre else "")
    present = [b for b in BACKENDS if b not in left_out]
    found: dict[str, dict[str, str]] = {}
    for build in BUILDS:
        wanted = ["keras", *(table["builds"][build][b] for b in present), *dependencies]
        got = resolver(python, glibc, wanted)
        if isinstance(got, str):
            raise RefreshError(f"Python {python} {build}: pip found no set of releases:\n{got}")
        found[build] = got
    row = {}
    for package in ["keras", *present]:
        picks = [found[build][distribution(table, build, package)] for build in BUILDS]
        row[package] = min(picks, key=version_key)
        if is_prerelease(row[package]):
            raise RefreshError(
                f"Python {python}: pip chose the pre-release {package} {row[package]}"
            )
    return row, left_out


def is_prerelease(version: str) -> bool:
    """2.22.0rc0, 1.0b2, 3.0a1, 2.0.dev3: not a release setup.yml installs."""
    return re.search(r"\d(a|b|rc|\.dev)\d*$", version) is not None


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def refreshed(
    table: dict[str, Any],
    dependencies: Sequence[str],
    today: str,
    resolver: Resolver | None = None,
    prerelease: Prerelease | None = None,
) -> dict[str, Any]:
    """A new table: every platform Python resolved again, dated today."""
    pythons = sorted({f["python"] for f in table["platforms"].values()}, key=version_key)
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(
            pool.map(
                lambda p: resolve_python(table, p, dependencies, resolver, prerelease), pythons
            )
        )
    new = dict(table)
    new["as_of"] = today
    new["source"] = f"python -m bench.facts.platforms refresh, resolved on {INDEX_URL}"
    new["pythons"] = {p: row for p, (row, _) in zip(pythons, results, strict=True)}
    new["unavailable"] = {p: left for p, (_, left) in zip(pythons, results, strict=True) if left}
    return new


def difference(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per cell that moved, appeared or went away."""
    lines = []
    for python in sorted(set(old["pythons"]) | set(new["pythons"]), key=version_key):
        before, after = old["pythons"].get(python, {}), new["pythons"].get(python, {})
        for package in PACKAGES:
            was, now = before.get(package, "none"), after.get(package, "none")
            if was != now:
                lines.append(f"Python {python} {package}: {was} -> {now}")
    return lines


def project_dependencies(pyproject: Path) -> list[str]:
    """dlstation's own dependencies: the venv installs them beside the backends."""
    import tomllib

    project: dict[str, Any] = tomllib.loads(pyproject.read_text())["project"]
    return [str(d) for d in project["dependencies"]]


def write_table(path: Path, table: dict[str, Any]) -> None:
    """The table as the repository keeps it: one line per platform, per Python and per build."""
    parts = [
        f"  {json.dumps(key)}: "
        + (section(value) if isinstance(value, dict) else json.dumps(value))
        for key, value in table.items()
    ]
    path.write_text("{\n" + ",\n".join(parts) + "\n}\n")


def section(value: dict[str, Any]) -> str:
    lines = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
    return "{\n" + lines + "\n  }" if value else "{}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.facts.platforms",
        description="Show the version table, or resolve it again against the package index.",
    )
    parser.add_argument("command", choices=["show", "refresh"])
    parser.add_argument("--table", type=Path, default=TABLE_FILE, help="the table to rewrite")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return OK if exit_.code == 0 else USAGE
    table = json.loads(args.table.read_text())
    if args.command == "show":
        print(f"version table of {table.get('as_of', 'unknown date')}")
        for python, row in table["pythons"].items():
            left = "; ".join(
                f"{k}: {v}" for k, v in table.get("unavailable", {}).get(python, {}).items()
            )
            print(
                f"Python {python}: "
                + ", ".join(f"{k} {v}" for k, v in row.items())
                + (f"; {left}" if left else "")
            )
        return OK
    today = datetime.now(timezone.utc).date().isoformat()
    dependencies = project_dependencies(Path(__file__).resolve().parents[2] / "pyproject.toml")
    try:
        new = refreshed(table, dependencies, today)
    except (RefreshError, subprocess.TimeoutExpired) as error:
        print(f"refresh failed, table unchanged: {error}", file=sys.stderr)
        return FAILED
    write_table(args.table, new)
    changes = difference(table, new)
    print(f"{args.table}: resolved on {INDEX_URL}, {today}")
    print("\n".join(changes) if changes else "no version moved")
    for python, left in new["unavailable"].items():
        for why in left.values():
            print(f"Python {python}: {why}")
    return OK


if __name__ == "__main__":
    sys.exit(main())
