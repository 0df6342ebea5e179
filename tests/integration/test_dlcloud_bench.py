"""`dlcloud bench` end to end: moto's HTTP server, real Ansible on this machine, real dlbench.

The "instances" are moto's; Ansible reaches them through a local connection, SSH is probed on a
loopback listener, and every path the playbooks write points into tmp, so nothing outside tmp
changes: the verify role and dlbench run from this venv, keras_env and jupyter are switched off.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud import inventory
from tests.conftest import REPO, free_port
from tests.harness.dlcloud import (
    CIDR,
    dlcloud,
    ec2,
    image_of,
    moto_server,
    read_until,
    start_dlcloud,
)

pytestmark = [pytest.mark.motoserver, pytest.mark.slow]

TYPES = ["g5.xlarge", "g6.xlarge"]
VENV = Path(sys.executable).parent.parent
WORKLOAD = "reuters --synthetic --epochs 2 --no-imds"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """moto's server, a loopback "SSH" listener, and an environment that reaches nothing else."""
    tmp = tmp_path_factory.mktemp("campaign")
    ssh = socket.create_server(("127.0.0.1", 0))  # the kernel completes connects: enough to probe
    with moto_server(tmp) as moto:
        env = {
            **moto,
            "DLSTATION_IMDS_URL": f"http://127.0.0.1:{free_port()}",
            "DLCLOUD_SSH_PROBE": f"127.0.0.1:{ssh.getsockname()[1]}",
            "KERAS_HOME": str(tmp / "keras-home"),
            "DLSTATION_CACHE_DIR": str(tmp / "cache"),
            "MPLCONFIGDIR": str(tmp / "matplotlib"),
            "PYTHONUNBUFFERED": "1",
        }
        client = ec2(env)
        try:
            yield {"env": env, "tmp": tmp, "ec2": client, "image": image_of(client)}
        finally:
            ssh.close()


def host_vars(root: Path, **more: Any) -> str:
    """Extra variables that keep setup.yml and bench.yml inside tmp and on this venv."""
    return json.dumps(
        {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "dlstation_configure_keras_env": False,
            "dlstation_configure_jupyter": False,
            # Both "instances" are this machine: each keeps its own folders, as real hosts do.
            "keras_env_root": f"{root}/{{{{ inventory_hostname }}}}",
            "keras_env_venv": str(VENV),
            "keras_env_backends": ["jax"],
            "verify_run_args": "--synthetic --epochs 1 --no-imds",
            "bench_venv": str(VENV),
            "bench_remote_result": f"{root}/remote/bench-{{{{ inventory_hostname }}}}.json",
            **more,
        }
    )


def command(
    world: dict[str, Any], name: str, variables: str, bench_args: str = WORKLOAD, out: str = ""
) -> list[str]:
    """`dlcloud bench` of both types under this name, Ansible given these variables."""
    return [
        "bench",
        "--types",
        ",".join(TYPES),
        "--name",
        name,
        "--out",
        str(world["tmp"] / (out or name)),
        "--ttl",
        "1h",
        "--backend",
        "jax",
        "--bench-args",
        bench_args,
        "--ami-id",
        world["image"],
        "--ssh-cidr",
        CIDR,
        "--ansible-arg=-e",
        f"--ansible-arg={variables}",
        "--yes",
    ]


def bench(world: dict[str, Any], name: str, variables: str) -> subprocess.CompletedProcess[str]:
    return dlcloud(world["env"], *command(world, name, variables), timeout=300)


def live(client: Any) -> list[str]:
    reservations = client.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}]
    )["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]


def all_instances(client: Any) -> list[str]:
    reservations = client.describe_instances()["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]


def inventory_hosts(world: dict[str, Any]) -> dict[str, Any]:
    path = Path(world["env"]["DLCLOUD_INVENTORY"])
    document = inventory.load(path.read_text()) if path.is_file() else {}
    hosts: dict[str, Any] = (document or {}).get("all", {}).get("children", {}).get(
        "dlami", {}
    ).get("hosts") or {}
    return hosts


def rows(folder: Path) -> dict[str, dict[str, Any]]:
    campaign = json.loads((folder / "campaign.json").read_text())
    return {row["instance_type"]: row for row in campaign["types"]}


@pytest.fixture(scope="module")
def first_run(world: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    # dlbench verify trains for a while: one host verifies, the other shows "not verified".
    only_g5 = "{{ 'g5' in inventory_hostname }}"
    return bench(
        world, "full", host_vars(world["tmp"] / "host-full", dlstation_configure_verify=only_g5)
    )


def test_campaign_ranks_both_types_and_leaves_nothing(
    world: dict[str, Any], first_run: subprocess.CompletedProcess[str]
) -> None:
    assert first_run.returncode == 0, first_run.stdout[-3000:] + first_run.stderr[-2000:]
    out = first_run.stdout
    assert "most possible cost: $" in out and "quota G:" in out
    assert "setup.yml: verify" in out and "bench.yml: Run dlbench" in out, "progress names the step"
    folder = world["tmp"] / "full"
    found = rows(folder)
    assert set(found) == set(TYPES)
    for row in found.values():
        assert row["status"] == "done", row
        assert row["instance_hours"] > 0 and row["cost_usd"] > 0
    assert found["g5.xlarge"]["verdict"] == "PASS"
    assert found["g6.xlarge"]["verdict"] is None, "verify was off for it"
    report = (folder / "report" / "report.md").read_text()
    assert "## Ranking: campaign full" in report
    ranking = report.split("## Ranking", 1)[1].split("## Summary", 1)[0]
    assert "| 1 | g" in ranking and "| 2 | g" in ranking
    for kind in TYPES:
        assert kind in ranking
    assert "Campaign cost:" in ranking and "instance-hours" in ranking
    assert "campaign cost:" in out
    # The terminal shows the same ranking, built from the result files.
    shown = out.split("## Ranking: campaign full", 1)[1]
    assert "| 1 | g" in shown and "| 2 | g" in shown and "Campaign cost:" in shown
    assert live(world["ec2"]) == []
    assert inventory_hosts(world) == {}
    assert sorted(p.name for p in (folder / "results").glob("*.json")) == [
        "full-g5-xlarge.json",
        "full-g6-xlarge.json",
    ]


def test_resume_launches_nothing_new(
    world: dict[str, Any], first_run: subprocess.CompletedProcess[str]
) -> None:
    assert first_run.returncode == 0
    before = all_instances(world["ec2"])
    again = bench(
        world, "full", host_vars(world["tmp"] / "host-full", dlstation_configure_verify=False)
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    assert "launching nothing" in again.stdout
    assert all_instances(world["ec2"]) == before
    found = rows(world["tmp"] / "full")
    assert {row["status"] for row in found.values()} == {"reused"}
    assert "## Ranking" in (world["tmp"] / "full" / "report" / "report.md").read_text()


def test_one_host_failing_is_its_rows_reason(world: dict[str, Any]) -> None:
    # A benchmark error on one host: dlbench refuses --epochs 0 there.
    broken = (
        "{{ dlcloud_bench_argv[inventory_hostname]"
        " + (['--epochs', '0'] if 'g6' in inventory_hostname else []) }}"
    )
    variables = host_vars(
        world["tmp"] / "host-fail", dlstation_configure_verify=False, bench_argv=broken
    )
    done = bench(world, "fail", variables)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    found = rows(world["tmp"] / "fail")
    assert found["g5.xlarge"]["status"] == "done", done.stdout[-3000:]
    assert found["g6.xlarge"]["status"] == "failed"
    assert "bench: Run dlbench" in found["g6.xlarge"]["reason"]
    assert "--epochs" in found["g6.xlarge"]["reason"] and "(exit 2)" in found["g6.xlarge"]["reason"]
    report = (world["tmp"] / "fail" / "report" / "report.md").read_text()
    assert "failed: bench: Run dlbench" in report
    assert live(world["ec2"]) == []
    assert inventory_hosts(world) == {}


def test_ctrl_c_terminates_everything_and_writes_the_partial_report(
    world: dict[str, Any],
) -> None:
    variables = host_vars(world["tmp"] / "host-int", dlstation_configure_verify=False)
    process = start_dlcloud(world["env"], *command(world, "interrupted", variables))
    seen = read_until(process.stdout, "bench.yml: Run dlbench")
    assert live(world["ec2"]), "instances were running when Ctrl-C came:\n" + "".join(seen)
    process.send_signal(signal.SIGINT)
    rest, errors = process.communicate(timeout=120)
    assert process.returncode == 130, "".join(seen) + rest + errors
    assert "interrupted" in errors
    assert live(world["ec2"]) == []
    assert inventory_hosts(world) == {}
    found = rows(world["tmp"] / "interrupted")
    assert {row["status"] for row in found.values()} == {"failed"}
    assert all("interrupted" in (row["reason"] or "") for row in found.values())
    assert all(row["instance_hours"] > 0 for row in found.values())
    assert (world["tmp"] / "interrupted" / "report" / "report.md").is_file()


HOSTILE = '\'{{ lookup("pipe", "touch PWNED; id -un") }}\''
LITERAL = '{{ lookup("pipe", "touch PWNED; id -un") }}'


def test_bench_args_and_paths_are_data_never_templates(world: dict[str, Any]) -> None:
    variables = host_vars(world["tmp"] / "host-pwn", dlstation_configure_verify=False)
    folder = "pwn-{{ 6 * 7 }}"  # a campaign folder whose name looks like a template
    argv = command(world, "pwn", variables, bench_args=f"{WORKLOAD} {HOSTILE}", out=folder)
    done = dlcloud(world["env"], *argv, timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    assert not list(REPO.glob("PWNED")) and not list(world["tmp"].rglob("PWNED"))
    found = rows(world["tmp"] / folder)
    for row in found.values():
        # dlbench got the text as one argument, literally, and refused it.
        assert row["status"] == "failed", row
        assert f"dlbench: error: unrecognized arguments: {LITERAL} (see" in row["reason"], row
    assert not (world["tmp"] / "pwn-42").exists()
    assert live(world["ec2"]) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_while_waiting_for_ssh_terminates_both(
    world: dict[str, Any], signum: int
) -> None:
    name = f"stop-{signal.Signals(signum).name.lower()}"
    variables = host_vars(world["tmp"] / f"host-{name}", dlstation_configure_verify=False)
    closed = free_port()  # nothing listens there: SSH never answers
    unanswered = {**world["env"], "DLCLOUD_SSH_PROBE": f"127.0.0.1:{closed}"}
    process = start_dlcloud(unanswered, *command(world, name, variables))
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if sum("waiting SSH" in s for s in seen) == len(TYPES):
            break
    running = live(world["ec2"])
    assert len(running) == len(TYPES), "".join(seen)
    sent = time.monotonic()
    process.send_signal(signum)
    rest, errors = process.communicate(timeout=120)
    took = time.monotonic() - sent
    assert process.returncode == 143, "".join(seen) + rest + errors
    stopped = signal.Signals(signum).name
    (summary,) = [line for line in errors.splitlines() if "interrupted by" in line]
    assert summary.startswith(f"dlcloud: interrupted by {stopped}; terminated ")
    for instance_id in running:
        assert instance_id in summary
    assert live(world["ec2"]) == []
    assert inventory_hosts(world) == {}
    assert took < 60, f"{took:.0f} s from the signal to the exit"
