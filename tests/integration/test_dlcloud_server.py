"""dlcloud as a user's shell runs it, against moto's HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloud import guard, inventory
from tests.conftest import REPO
from tests.harness.aging import age_launch_resources
from tests.harness.dlcloud import (
    CIDR,
    caller,
    dlcloud,
    dlcloud_raw,
    ec2,
    image_of,
    launch_args,
    live,
    start_dlcloud,
)

# Every test here drives the installed dlcloud against moto's server: seconds each.
pytestmark = [pytest.mark.motoserver, pytest.mark.slow]


def project_states(client: Any) -> dict[str, str]:
    reservations = client.describe_instances(
        Filters=[{"Name": "tag:Project", "Values": ["dlstation"]}]
    )["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}


def test_launch_list_inventory_terminate(moto_env: dict[str, str], tmp_path: Path) -> None:
    client = ec2(moto_env)
    image = image_of(client)

    launched = dlcloud(moto_env, *launch_args(image, "lab", "--ttl", "2h"))
    assert launched.returncode == 0, launched.stderr
    assert "lab: i-" in launched.stdout and " running at " in launched.stdout
    assert "ssh -i " in launched.stdout and "-L 8888:127.0.0.1:8888" in launched.stdout
    states = project_states(client)
    assert list(states.values()) == ["running"]
    (instance_id,) = states

    again = dlcloud(moto_env, *launch_args(image, "lab"))
    assert again.returncode == 0 and "already exists" in again.stdout
    assert len(project_states(client)) == 1

    listed = dlcloud(moto_env, "list")
    assert listed.returncode == 0
    assert "lab" in listed.stdout and instance_id in listed.stdout and "2.0h" in listed.stdout

    hosts = inventory.load(Path(moto_env["DLCLOUD_INVENTORY"]).read_text())["all"]["children"][
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

    age_launch_resources(client, Path(moto_env["DLCLOUD_KEY_DIR"]))  # past the grace period
    terminated = dlcloud(moto_env, "terminate", "lab", "--yes")
    assert terminated.returncode == 0, terminated.stderr
    assert f"terminated {instance_id}" in terminated.stdout
    assert "deleted security group" in terminated.stdout and "deleted key pair" in terminated.stdout
    assert project_states(client)[instance_id] == "terminated"
    assert (
        inventory.load(Path(moto_env["DLCLOUD_INVENTORY"]).read_text())["all"]["children"]["dlami"][
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
    image = image_of(client)
    launched = dlcloud(moto_env, *launch_args(image, "gpu1", instance_type="g4dn.xlarge"))
    assert launched.returncode == 0
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
    image = image_of(client)
    launched = dlcloud(
        moto_env, *launch_args(image, "old", "--ttl", "10m", instance_type="g6.xlarge")
    )
    assert launched.returncode == 0
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


def test_the_users_key_pair_file_and_instance_survive_terminate(moto_env: dict[str, str]) -> None:
    client = ec2(moto_env)
    image = image_of(client)
    key_file = Path(moto_env["DLCLOUD_KEY_DIR"]) / "mykey.pem"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(client.create_key_pair(KeyName="mykey")["KeyMaterial"])
    theirs = client.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", KeyName="mykey"
    )["Instances"][0]["InstanceId"]

    launched = dlcloud(moto_env, *launch_args(image, "lab", "--key-name", "mykey"))
    assert launched.returncode == 0, launched.stderr
    terminated = dlcloud(moto_env, "terminate", "lab", "--yes")
    assert terminated.returncode == 0, terminated.stderr
    assert "deleted key pair" not in terminated.stdout
    assert "deleted key file" not in terminated.stdout
    assert "kept key pair mykey and its key file: dlcloud did not create them" in terminated.stdout
    assert [k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]] == ["mykey"]
    assert key_file.is_file()
    assert [i["InstanceId"] for i in live(client)] == [theirs]

    # dlcloud's own key and group go once nothing uses them.
    assert dlcloud(moto_env, *launch_args(image, "lab2")).returncode == 0
    ours = Path(moto_env["DLCLOUD_KEY_DIR"]) / "dlstation-us-east-1.pem"
    assert ours.is_file()
    age_launch_resources(client, Path(moto_env["DLCLOUD_KEY_DIR"]))  # past the grace period
    terminated = dlcloud(moto_env, "terminate", "lab2", "--yes")
    assert terminated.returncode == 0, terminated.stderr
    assert "deleted key pair dlstation-us-east-1" in terminated.stdout
    assert f"deleted key file {ours}" in terminated.stdout
    assert "deleted security group" in terminated.stdout
    assert not ours.exists() and key_file.is_file()
    assert [k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]] == ["mykey"]


def test_a_users_security_group_is_untouched(moto_env: dict[str, str]) -> None:
    client = ec2(moto_env)
    image = image_of(client)
    vpc = client.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    tagged = client.create_security_group(
        GroupName="my-lab-group",
        Description="the user's, tagged for the inventory",
        VpcId=vpc["VpcId"],
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": "Project", "Value": "dlstation"}]}
        ],
    )["GroupId"]
    reaped = dlcloud(moto_env, "reap", "--yes")
    assert reaped.returncode == 0 and "nothing to reap" in reaped.stdout
    assert client.describe_security_groups(GroupIds=[tagged])["SecurityGroups"]

    ours = guard.ssh_group_name("lab", caller(moto_env))
    same_name = client.create_security_group(
        GroupName=ours, Description="the user's own", VpcId=vpc["VpcId"]
    )["GroupId"]
    refused = dlcloud(moto_env, *launch_args(image, "lab"))
    assert refused.returncode == 2
    assert "dlcloud did not create" in refused.stderr and "Traceback" not in refused.stderr
    (group,) = client.describe_security_groups(GroupIds=[same_name])["SecurityGroups"]
    assert group["IpPermissions"] == [] and live(client) == []


def test_concurrent_launches_of_one_name_end_with_one_instance(
    moto_env: dict[str, str], tmp_path: Path
) -> None:
    client = ec2(moto_env)
    image = image_of(client)
    runs = [start_dlcloud(moto_env, *launch_args(image, "race")) for _ in range(3)]
    outputs = [run.communicate(timeout=180) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], [err for _, err in outputs]
    (kept,) = live(client, Name="race")
    for out, _ in outputs:
        assert f"race: {kept['InstanceId']} running" in out
    listed = dlcloud(moto_env, "list")
    assert listed.stdout.count("race") == 1


def test_hostile_name_is_refused_and_printed_commands_are_quoted(
    moto_env: dict[str, str], tmp_path: Path
) -> None:
    client = ec2(moto_env)
    image = image_of(client)
    refused = dlcloud(moto_env, *launch_args(image, "bad name;rm -rf /"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "for example --name bad-name-rm-rf" in refused.stderr
    assert dlcloud(moto_env, *launch_args(image, "x" * 300)).returncode == 2
    assert live(client) == []

    env = {**moto_env, "DLCLOUD_KEY_DIR": str(tmp_path / "my keys; echo owned")}
    launched = dlcloud(env, *launch_args(image, "lab"))
    assert launched.returncode == 0, launched.stderr
    lines = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
        for line in launched.stdout.splitlines()
        if line.startswith(("  ssh:", "  jupyter:", "  ansible:", "  when done:"))
    }
    key = str(tmp_path / "my keys; echo owned" / "dlstation-us-east-1.pem")
    assert shlex.split(lines["ssh"])[:3] == ["ssh", "-i", key]
    assert shlex.split(lines["jupyter"].split("  # ")[0])[2] == key
    assert shlex.split(lines["ansible"])[-2:] == ["--limit", "lab"]
    assert shlex.split(lines["when done"]) == [
        "dlcloud",
        "--region",
        "us-east-1",
        "terminate",
        "lab",
    ]
    printed = dlcloud(env, "ssh", "lab", "--print")
    assert shlex.split(printed.stdout)[2] == key


class Junk(BaseHTTPRequestHandler):
    """Not AWS: answers every request with a page botocore cannot parse."""

    def do_POST(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html><body>hello")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_unknown_region_and_a_non_aws_endpoint_are_messages(moto_env: dict[str, str]) -> None:
    done = dlcloud_raw(moto_env, "--region", "mars-east-9", "list")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "unknown AWS region 'mars-east-9'" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2

    server = ThreadingHTTPServer(("127.0.0.1", 0), Junk)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**moto_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}"}
        done = dlcloud(env, "list")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "what to do:" in done.stderr and len(done.stderr.strip().splitlines()) <= 2


def test_global_options_after_the_subcommand(moto_env: dict[str, str]) -> None:
    image = image_of(ec2(moto_env))
    launched = dlcloud_raw(moto_env, *launch_args(image, "late"), "--region", "us-east-1")
    assert launched.returncode == 0, launched.stderr
    listed = dlcloud_raw(moto_env, "list", "--region", "us-east-1")
    assert listed.returncode == 0 and "late" in listed.stdout and "us-east-1" in listed.stdout


def test_launch_list_and_terminate_show_the_bill(moto_env: dict[str, str]) -> None:
    image = image_of(ec2(moto_env))
    launched = dlcloud(moto_env, *launch_args(image, "paid", "--idle-stop", "45m"))
    assert launched.returncode == 0, launched.stderr
    assert "idle stop  45m: powers off (and terminates) after 45m" in launched.stdout
    listed = dlcloud(moto_env, "list")
    header, _, row = listed.stdout.splitlines()[:3]
    assert "idle" in header and "cost so far" in header
    assert "? of 45m (no report)" in row and "$0.00" in row
    terminated = dlcloud(moto_env, "terminate", "paid", "--yes")
    assert terminated.returncode == 0, terminated.stderr
    (bill,) = [line for line in terminated.stdout.splitlines() if line.startswith("cost: ")]
    assert bill.startswith("cost: paid (i-") and "ran 0h0" in bill
    assert "at $1.0060/h (on-demand, " in bill


def test_keepalive_prints_the_command_that_sets_it_on_the_instance(
    moto_env: dict[str, str],
) -> None:
    image = image_of(ec2(moto_env))
    assert dlcloud(moto_env, *launch_args(image, "kept")).returncode == 0
    ssh = shlex.split(dlcloud(moto_env, "ssh", "kept", "--print").stdout)
    printed = dlcloud(moto_env, "keepalive", "kept", "2h", "--print")
    assert printed.returncode == 0, printed.stderr
    command = shlex.split(printed.stdout)
    assert command[:-1] == ssh, "the same login as dlcloud ssh"
    assert shlex.split(command[-1]) == ["sudo", "dlstation-keepalive", "2h"]
    refused = dlcloud(moto_env, "keepalive", "kept", "soon; reboot", "--print")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "write e.g. 90m, 2h or 1d, or off" in refused.stderr and refused.stdout == ""
