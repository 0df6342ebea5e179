"""The version table: rows per Python, requirements per build, and what a launch plan says."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bench.facts import platforms
from bench.facts.catalog import Price
from cloud import ami
from cloud.launcher import LaunchRequest, Plan


def test_requirements_per_build() -> None:
    assert platforms.requirements("3.10", "gpu", ["tensorflow", "jax"]) == [
        "keras==3.12.4",
        "tensorflow[and-cuda]==2.21.0",
        "jax[cuda12]==0.6.2",
    ]
    assert platforms.requirements("3.12", "cpu", ["torch", "tensorflow"]) == [
        "keras==3.15.1",
        "torch==2.13.0",
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
        "tensorflow 2.21.0, jax 0.10.2, torch 2.13.0"
    ) in default.lines()
    older = plan(LaunchRequest("g5.xlarge", "gpu1", ami_type=ami.DEFAULT_AMI_TYPE[:-5] + "22.04"))
    assert any(
        "Ubuntu 22.04, Python 3.10" in line and "keras 3.12.4" in line for line in older.lines()
    )
    given = plan(LaunchRequest("g5.xlarge", "gpu1", ami_id="ami-0fedcba9876543210"))
    assert any("--ami-id image: setup.yml picks" in line for line in given.lines())
