"""The version table: rows per Python, requirements per build, and what a launch plan says."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bench.facts import platforms
from bench.facts.catalog import Price
from cloud import ami
from cloud.aws import CloudError
from cloud.launcher import LaunchRequest, Plan


def test_requirements_per_build() -> None:
    assert platforms.requirements("3.10", "gpu", ["tensorflow", "jax"]) == [
        "keras==3.12.4",
        "tensorflow[and-cuda]==2.21.0",
        "jax[cuda12]==0.6.2",
    ]
    assert platforms.requirements("3.12", "cpu", ["torch", "tensorflow"]) == [
        "keras==3.15.1",
        "torch==2.15.0",
        "tensorflow-cpu==2.21.0",
    ]


def test_a_python_without_a_row_is_named_with_those_there_are() -> None:
    with pytest.raises(KeyError, match=r"no version row for Python 3\.9; the table has 3\.10"):
        platforms.versions("3.9")


def test_every_platform_python_has_a_row() -> None:
    for platform, facts in platforms.matrix()["platforms"].items():
        assert platforms.versions(facts["python"]), platform


def plan(request: LaunchRequest) -> Plan:
    now = datetime(2026, 11, 27, tzinfo=timezone.utc)
    return Plan(
        request=request,
        region="us-east-1",
        owner="arn:aws:iam::123456789012:user/test",
        ami_id="ami-0123456789abcdef0",
        ami_source="SSM",
        root_device="/dev/sda1",
        zones=["us-east-1a"],
        price=Price(1.006, "on-demand", "2026-11"),
        ttl=timedelta(hours=4),
        expires_at=now + timedelta(hours=4),
        quota="ok",
    )


def test_launch_plan_names_the_hosts_python_and_versions() -> None:
    default = plan(LaunchRequest("g5.xlarge", "gpu1"))
    assert ami.DEFAULT_AMI_TYPE == "base-oss-nvidia-driver-gpu-ubuntu-24.04"
    assert (
        "  software   Ubuntu 24.04, Python 3.12: setup.yml installs keras 3.15.1, "
        "tensorflow 2.21.0, jax 0.12.0.1, torch 2.15.0"
    ) in default.lines()
    older = plan(LaunchRequest("g5.xlarge", "gpu1", ami_type=ami.DEFAULT_AMI_TYPE[:-5] + "22.04"))
    assert any(
        "Ubuntu 22.04, Python 3.10" in line and "keras 3.12.4" in line for line in older.lines()
    )
    newest = plan(LaunchRequest("g5.xlarge", "gpu1", ami_type=ami.BY_OS["ubuntu-26.04"]))
    assert (
        "  software   Ubuntu 26.04, Python 3.14: setup.yml installs keras 3.15.1, "
        "jax 0.12.0.1, torch 2.15.0; no tensorflow"
    ) in newest.lines()
    given = plan(LaunchRequest("g5.xlarge", "gpu1", ami_id="ami-0fedcba9876543210"))
    assert any("--ami-id image: setup.yml picks" in line for line in given.lines())


# --- The refresh, with pip's resolver replaced by the index's answers ---------------------------

TABLE = {
    "platforms": {
        "Old-1": {"python": "3.10", "glibc": "2.35"},
        "New-2": {"python": "3.14", "glibc": "2.42"},
        "Other-3": {"python": "3.14", "glibc": "2.41"},
    },
    "pythons": {
        "3.10": {"keras": "3.12.4", "tensorflow": "2.21.0", "jax": "0.6.2", "torch": "2.13.0"}
    },
    "builds": {
        "gpu": {"tensorflow": "tensorflow[and-cuda]", "jax": "jax[cuda12]", "torch": "torch"},
        "cpu": {"tensorflow": "tensorflow-cpu", "jax": "jax", "torch": "torch"},
    },
}


def index_answer(
    python: str, glibc: tuple[int, int], wanted: Sequence[str]
) -> dict[str, str] | str:
    """What pip says for these requirements: no TensorFlow for 3.14; torch's CPU build older."""
    if python == "3.14" and any(w.startswith("tensorflow") for w in wanted):
        if "--no-deps" in wanted:  # pip alone takes the pre-release when nothing else exists
            return {"tensorflow-cpu": "2.22.0rc0"}
        return "ERROR: No matching distribution found for tensorflow-cpu"
    newest = {
        "3.10": {
            "keras": "3.12.4",
            "jax": "0.6.2",
            "torch": "2.14.1",
            "tensorflow": "2.21.0",
            "tensorflow-cpu": "2.21.0",
        },
        "3.14": {"keras": "3.15.1", "jax": "0.12.0.1", "torch": "2.15.0"},
    }[python]
    found = {name.split("[")[0]: version for name, version in newest.items()}
    if "torch" in wanted and "jax[cuda12]" not in wanted and python == "3.10":
        found["torch"] = "2.14.0"  # the CPU build lags: the row takes what both builds have
    return found


def test_refresh_resolves_each_python_at_its_oldest_glibc() -> None:
    seen: list[tuple[str, tuple[int, int]]] = []

    def recording(
        python: str, glibc: tuple[int, int], wanted: Sequence[str]
    ) -> dict[str, str] | str:
        seen.append((python, glibc))
        return index_answer(python, glibc, wanted)

    new = platforms.refreshed(TABLE, ["psutil"], "2026-12-01", recording, lambda *a: "2.22.0rc0")
    assert {glibc for python, glibc in seen if python == "3.14"} == {(2, 41)}
    assert new["as_of"] == "2026-12-01"
    assert new["pythons"]["3.14"] == {"keras": "3.15.1", "jax": "0.12.0.1", "torch": "2.15.0"}
    assert new["unavailable"] == {
        "3.14": {
            "tensorflow": "no stable tensorflow wheel for Python 3.14 on the index "
            "(newest pre-release: 2.22.0rc0)"
        }
    }
    assert new["pythons"]["3.10"]["torch"] == "2.14.0", "the version both builds install"
    assert platforms.difference(TABLE, new) == [
        "Python 3.10 torch: 2.13.0 -> 2.14.0",
        "Python 3.14 keras: none -> 3.15.1",
        "Python 3.14 jax: none -> 0.12.0.1",
        "Python 3.14 torch: none -> 2.15.0",
    ]


def test_a_python_whose_set_does_not_resolve_stops_the_refresh() -> None:
    def broken(python: str, glibc: tuple[int, int], wanted: Sequence[str]) -> dict[str, str] | str:
        return "ERROR: ResolutionImpossible" if len(wanted) > 2 else {"x": "1"}

    with pytest.raises(
        platforms.RefreshError, match=r"Python 3\.10 gpu: pip found no set of releases"
    ):
        platforms.refreshed(TABLE, [], "2026-12-01", broken, lambda *a: None)


def test_the_refresh_command_rewrites_the_table_and_prints_the_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "platforms.json"
    table.write_text(json.dumps(TABLE))
    monkeypatch.setattr(platforms, "pip_resolve", index_answer)
    monkeypatch.setattr(platforms, "newest_prerelease", lambda *a: None)
    assert platforms.main(["refresh", "--table", str(table)]) == 0
    out = capsys.readouterr().out
    assert "Python 3.10 torch: 2.13.0 -> 2.14.0" in out
    assert "Python 3.14: no stable tensorflow wheel for Python 3.14 on the index" in out
    written = json.loads(table.read_text())
    assert written["pythons"]["3.14"]["jax"] == "0.12.0.1"
    assert written["as_of"] == platforms.datetime.now(platforms.timezone.utc).date().isoformat()
    assert platforms.main(["refresh", "--table", str(table)]) == 0
    assert "no version moved" in capsys.readouterr().out


def test_pip_is_asked_without_this_machines_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/xdg/pip/constraints.txt")
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    env = platforms.pip_environment()
    assert env["PIP_CONFIG_FILE"] == os.devnull
    assert "PIP_CONSTRAINT" not in env and "PIP_FIND_LINKS" not in env
    command = platforms.pip_command("3.13", (2, 41), ["jax"])
    assert "--isolated" in command and "--only-binary=:all:" in command
    assert (
        "--platform=manylinux_2_41_x86_64" in command
        and "--platform=manylinux_2_42_x86_64" not in command
    )
    assert command[command.index("--index-url") + 1] == "https://pypi.org/simple"


def test_the_table_covers_the_five_systems_and_says_what_is_missing() -> None:
    table = platforms.matrix()
    assert {p: f["python"] for p, f in table["platforms"].items()} == {
        "Ubuntu-22.04": "3.10",
        "Debian-12": "3.11",
        "Ubuntu-24.04": "3.12",
        "Debian-13": "3.13",
        "Ubuntu-26.04": "3.14",
    }
    assert "tensorflow" not in platforms.versions("3.14")
    assert (
        "no stable tensorflow wheel for Python 3.14" in platforms.unavailable("3.14")["tensorflow"]
    )
    assert platforms.requirements("3.14", "cpu", ["tensorflow", "jax"]) == [
        f"keras=={platforms.versions('3.14')['keras']}",
        f"jax=={platforms.versions('3.14')['jax']}",
    ]
    assert table["as_of"] and table["source"].startswith("python -m bench.facts.platforms refresh")


def test_launch_os_picks_the_dlami_of_that_release() -> None:
    assert ami.choose_type(None, "ubuntu-26.04") == "base-oss-nvidia-driver-gpu-ubuntu-26.04"
    assert ami.choose_type(None, None) == ami.DEFAULT_AMI_TYPE
    with pytest.raises(CloudError, match="give --os or --ami-type, not both"):
        ami.choose_type("base-oss-nvidia-driver-gpu-ubuntu-22.04", "ubuntu-24.04")
    for ami_type in ami.BY_OS.values():
        assert platforms.for_ami_type(ami_type) is not None, f"{ami_type} not in the table"
    assert "no tensorflow" in platforms.describe_host("base-oss-nvidia-driver-gpu-ubuntu-26.04")


def test_launch_refuses_os_and_ami_type_together(capsys: pytest.CaptureFixture[str]) -> None:
    from cloud.cli import main

    argv = ["launch", "--instance-type", "g5.xlarge", "--os", "ubuntu-26.04"]
    assert main([*argv, "--ami-type", ami.DEFAULT_AMI_TYPE]) == 2
    assert "give --os or --ami-type, not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["launch", "--instance-type", "g5.xlarge", "--os", "ubuntu-20.04"])
    assert usage.value.code == 2
    assert "invalid choice: 'ubuntu-20.04'" in capsys.readouterr().err
