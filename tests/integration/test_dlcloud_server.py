"""dlcloud as a user's shell runs it, against moto's HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.conftest import REPO
from tests.fakes.aws import FAKE_CREDENTIALS

pytestmark = pytest.mark.motoserver

CIDR = "203.0.113.7/32"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def moto_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # Imported here: without moto's server the tests skip (marker motoserver), not break collection.
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto's backends are process-global: start every test from an empty account.
    urllib.request.urlopen(
        urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")
    ).close()
    env = {
        **os.environ,
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "DLCLOUD_KEY_DIR": str(tmp_path / "keys"),
        "DLCLOUD_INVENTORY": str(tmp_path / "dlcloud.yml"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_DEPRECATION_WARNINGS": "false",
    }
    try:
        yield env
    finally:
        server.stop()


def ec2(env: dict[str, str]) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def dlcloud(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("dlcloud", path=str(Path(sys.executable).parent)) or "dlcloud"
    return subprocess.run(
        [executable, "--region", "us-east-1", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def project_states(client: Any) -> dict[str, str]:
    reservations = client.describe_instances(
        Filters=[{"Name": "tag:Project", "Values": ["dlstation"]}]
    )["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}


def test_launch_list_inventory_terminate(moto_env: dict[str, str], tmp_path: Path) -> None:
    client = ec2(moto_env)
    image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    launched = dlcloud(
        moto_env,
        "launch",
        "--instance-type",
        "g5.xlarge",
        "--name",
        "lab",
        "--ami-id",
        image,
        "--ssh-cidr",
        CIDR,
        "--ttl",
        "2h",
        "--yes",
    )
    assert launched.returncode == 0, launched.stderr
    assert "lab: i-" in launched.stdout and " running at " in launched.stdout
    assert "ssh -i " in launched.stdout and "-L 8888:127.0.0.1:8888" in launched.stdout
    states = project_states(client)
    assert list(states.values()) == ["running"]
    (instance_id,) = states

    again = dlcloud(
        moto_env,
        "launch",
        "--instance-type",
        "g5.xlarge",
        "--name",
        "lab",
        "--ami-id",
        image,
        "--ssh-cidr",
        CIDR,
        "--yes",
    )
    assert again.returncode == 0 and "already exists" in again.stdout
    assert len(project_states(client)) == 1

    listed = dlcloud(moto_env, "list")
    assert listed.returncode == 0
    assert "lab" in listed.stdout and instance_id in listed.stdout and "2.0h" in listed.stdout

    hosts = yaml.safe_load(Path(moto_env["DLCLOUD_INVENTORY"]).read_text())["all"]["children"][
        "dlami"
    ]["hosts"]
    assert hosts["lab"]["dlstation_instance_id"] == instance_id

    static = subprocess.run(
        ["ansible-inventory", "-i", moto_env["DLCLOUD_INVENTORY"], "--list"],
        env=moto_env,
        capture_output=True,
        text=True,
        check=True,
        executable=shutil.which("ansible-inventory", path=str(Path(sys.executable).parent)),
    )
    assert "lab" in json.loads(static.stdout)["dlami"]["hosts"]

    printed = dlcloud(moto_env, "ssh", "lab", "--print")
    assert printed.stdout.startswith("ssh -i ") and "ubuntu@" in printed.stdout

    refused = dlcloud(moto_env, "terminate", "lab")  # no terminal, no --yes
    assert refused.returncode == 1 and project_states(client)[instance_id] == "running"

    terminated = dlcloud(moto_env, "terminate", "lab", "--yes")
    assert terminated.returncode == 0, terminated.stderr
    assert f"terminated {instance_id}" in terminated.stdout
    assert "deleted security group" in terminated.stdout and "deleted key pair" in terminated.stdout
    assert project_states(client)[instance_id] == "terminated"
    assert (
        yaml.safe_load(Path(moto_env["DLCLOUD_INVENTORY"]).read_text())["all"]["children"]["dlami"][
            "hosts"
        ]
        == {}
    )
    assert client.describe_key_pairs()["KeyPairs"] == []
    assert "no dlstation instances" in dlcloud(moto_env, "list").stdout


def plain(value: Any) -> Any:
    """ansible-inventory marks templated strings as {"__ansible_unsafe": ...} in its JSON."""
    return value.get("__ansible_unsafe", value) if isinstance(value, dict) else value


def test_aws_ec2_inventory_plugin_against_moto(moto_env: dict[str, str]) -> None:
    client = ec2(moto_env)
    image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    assert (
        dlcloud(
            moto_env,
            "launch",
            "--instance-type",
            "g4dn.xlarge",
            "--name",
            "gpu1",
            "--ami-id",
            image,
            "--ssh-cidr",
            CIDR,
            "--yes",
        ).returncode
        == 0
    )
    client.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    done = subprocess.run(
        [
            shutil.which("ansible-inventory", path=str(Path(sys.executable).parent))
            or "ansible-inventory",
            "-i",
            str(REPO / "inventory" / "aws_ec2.yml"),
            "--list",
        ],
        env=moto_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    groups = json.loads(done.stdout)
    assert groups["dlami"]["hosts"] == ["gpu1"], "only dlcloud's instance, not the t3.micro"
    variables = {k: plain(v) for k, v in groups["_meta"]["hostvars"]["gpu1"].items()}
    assert variables["ansible_user"] == "ubuntu"
    assert variables["ansible_ssh_private_key_file"].endswith("dlstation-us-east-1.pem")
    assert variables["dlstation_region"] == "us-east-1"


def test_reap_removes_expired_instances(moto_env: dict[str, str]) -> None:
    client = ec2(moto_env)
    image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    assert (
        dlcloud(
            moto_env,
            "launch",
            "--instance-type",
            "g6.xlarge",
            "--name",
            "old",
            "--ami-id",
            image,
            "--ssh-cidr",
            CIDR,
            "--ttl",
            "10m",
            "--yes",
        ).returncode
        == 0
    )
    (instance_id,) = project_states(client)
    # Backdate the expiry tag, as if the TTL had passed while the watchdog failed.
    client.create_tags(
        Resources=[instance_id],
        Tags=[
            {
                "Key": "dlstation:expires-at",
                "Value": "2020-01-01T00:00:00+00:00",
            }
        ],
    )
    reaped = dlcloud(moto_env, "reap", "--yes")
    assert reaped.returncode == 0, reaped.stderr
    assert f"expired instance {instance_id}" in reaped.stdout
    assert project_states(client)[instance_id] == "terminated"
    assert "nothing to reap" in dlcloud(moto_env, "reap").stdout


def test_expected_errors_have_no_traceback(moto_env: dict[str, str]) -> None:
    done = dlcloud(moto_env, "launch", "--instance-type", "t3.micro", "--ssh-cidr", CIDR, "--yes")
    assert done.returncode == 2
    assert "not a GPU instance type" in done.stderr and "Traceback" not in done.stderr
    done = dlcloud(moto_env, "terminate", "ghost", "--yes")
    assert done.returncode == 2 and "no live dlstation instance named 'ghost'" in done.stderr


def test_offers_and_price_refresh_against_moto(moto_env: dict[str, str], tmp_path: Path) -> None:
    offers = dlcloud(moto_env, "offers", "--gpu", "L4", "--live")
    assert offers.returncode == 0, offers.stderr
    assert "g6.xlarge" in offers.stdout and "spot now $/h" in offers.stdout
    output = tmp_path / "catalog.json"
    refreshed = dlcloud(moto_env, "prices", "--refresh", "--output", str(output))
    assert refreshed.returncode == 0, refreshed.stderr
    # moto serves no Pricing API: the old on-demand figures stay and the user is told.
    assert "Pricing API for us-east-1 failed" in refreshed.stdout
    data = json.loads(output.read_text())
    g5 = next(t for t in data["instance_types"] if t["instance_type"] == "g5.xlarge")
    assert g5["on_demand_usd_per_hour"]["us-east-1"] == 1.006
