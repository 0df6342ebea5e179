"""dlcloud while another process holds its locks, and the inventory and key paths it is given."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import exitcodes
from cloud import guard, inventory
from tests.harness.dlcloud import (
    COLLEAGUE,
    dlcloud,
    dlcloud_raw,
    dlcloud_tags,
    ec2,
    image_of,
    launch_args,
    live,
    lock_holders,
    run_tagged,
    start_dlcloud,
    wait_for_line,
)

pytestmark = [pytest.mark.motoserver, pytest.mark.slow]


@pytest.fixture
def env(moto_env: dict[str, str]) -> dict[str, str]:
    return {**moto_env, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def hold(env: dict[str, str]) -> Iterator[Any]:
    """hold(path): another process takes that lock file and keeps it until the test ends."""
    with lock_holders() as take:
        yield take


def inventory_lock(env: dict[str, str]) -> Path:
    path = Path(env["DLCLOUD_INVENTORY"])
    return path.parent / f".{path.name}.lock"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=str)
def test_a_signal_while_the_inventory_is_locked_terminates_the_new_instance(
    env: dict[str, str], hold: Any, signum: int
) -> None:
    client = ec2(env)
    hold(inventory_lock(env))
    launching = start_dlcloud(env, *launch_args(image_of(client), "t4"), merge_stderr=True)
    seen = wait_for_line(launching.stdout, "waiting for another dlcloud to finish writing")
    assert str(Path(env["DLCLOUD_INVENTORY"])) in seen[-1]
    (started,) = live(client, Name="t4")
    launching.send_signal(signum)
    rest, _ = launching.communicate(timeout=90)
    code = exitcodes.INTERRUPTED if signum == signal.SIGINT else exitcodes.TERMINATED
    assert launching.returncode == code, rest
    assert f"terminated {started['InstanceId']} (t4)" in rest
    assert live(client, Name="t4") == []


@pytest.mark.parametrize(
    "lock", [".dlcloud.lock", ".launch-us-east-1-w7.lock"], ids=["key-folder", "per-name"]
)
def test_a_launch_waiting_for_a_lock_says_so_and_stops_on_sigterm(
    env: dict[str, str], hold: Any, lock: str
) -> None:
    client = ec2(env)
    hold(Path(env["DLCLOUD_KEY_DIR"]) / lock)
    launching = start_dlcloud(env, *launch_args(image_of(client), "w7"), merge_stderr=True)
    seen = wait_for_line(launching.stdout, "waiting for another dlcloud")
    assert lock in seen[-1]
    launching.send_signal(signal.SIGTERM)
    rest, _ = launching.communicate(timeout=90)
    assert launching.returncode == exitcodes.TERMINATED, rest
    assert "interrupted by SIGTERM" in rest and "Traceback" not in rest
    assert live(client, Name="w7") == []


def test_terminate_waiting_for_the_inventory_names_what_it_terminated(
    env: dict[str, str], hold: Any
) -> None:
    client = ec2(env)
    assert dlcloud(env, *launch_args(image_of(client), "s2")).returncode == 0
    (instance,) = live(client, Name="s2")
    hold(inventory_lock(env))
    stopping = start_dlcloud(env, "terminate", "s2", "--yes", merge_stderr=True)
    wait_for_line(stopping.stdout, "waiting for another dlcloud to finish writing")
    stopping.send_signal(signal.SIGTERM)
    rest, _ = stopping.communicate(timeout=90)
    assert stopping.returncode == exitcodes.TERMINATED, rest
    assert f"terminated {instance['InstanceId']} (s2)" in rest


# -- paths and values checked before anything is created ----------------------------------


def everything(client: Any) -> tuple[Any, ...]:
    return (
        [
            i["InstanceId"]
            for r in client.describe_instances()["Reservations"]
            for i in r["Instances"]
        ],
        sorted(k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]),
        sorted(g["GroupName"] for g in client.describe_security_groups()["SecurityGroups"]),
    )


def assert_refused_unchanged(env: dict[str, str], before: tuple[Any, ...], *argv: str) -> str:
    refused = dlcloud(env, *argv)
    assert refused.returncode == exitcodes.USAGE, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert everything(ec2(env)) == before
    return refused.stderr


def test_an_inventory_under_a_plain_file_is_refused_before_launching(
    env: dict[str, str], tmp_path: Path
) -> None:
    client = ec2(env)
    image = image_of(client)
    (tmp_path / "afile").write_text("not a folder\n")
    before = everything(client)
    for where in (tmp_path / "afile" / "inv.yml", tmp_path / "afile" / "deeper" / "inv.yml"):
        bad = {**env, "DLCLOUD_INVENTORY": str(where)}
        message = assert_refused_unchanged(bad, before, *launch_args(image, "p2"))
        assert "afile" in message
    assert not (Path(env["DLCLOUD_KEY_DIR"])).exists()


def test_a_dangling_key_file_link_is_refused_before_the_key_pair(
    env: dict[str, str], tmp_path: Path
) -> None:
    client = ec2(env)
    folder = Path(env["DLCLOUD_KEY_DIR"])
    folder.mkdir(mode=0o700)
    (folder / "dlstation-us-east-1.pem").symlink_to(tmp_path / "nowhere.pem")
    message = assert_refused_unchanged(
        env, everything(client), *launch_args(image_of(client), "d6")
    )
    assert "dlstation-us-east-1.pem" in message


def test_an_unusable_key_folder_is_refused_before_the_key_pair(
    env: dict[str, str], tmp_path: Path
) -> None:
    client = ec2(env)
    (tmp_path / "keyfile").write_text("a file\n")
    before = everything(client)
    for folder in (tmp_path / "keyfile", tmp_path / "keyfile" / "sub", Path("/proc/dlcloud")):
        bad = {**env, "DLCLOUD_KEY_DIR": str(folder)}
        assert_refused_unchanged(bad, before, *launch_args(image_of(client), "k1"))


def test_inventory_values_are_data_to_ansible(env: dict[str, str], tmp_path: Path) -> None:
    client = ec2(env)
    proof = tmp_path / "PWNED"
    folder = tmp_path / f"k{{{{ lookup('pipe', 'id > {proof}') }}}}"
    templated = {**env, "DLCLOUD_KEY_DIR": str(folder)}
    launched = dlcloud(templated, *launch_args(image_of(client), "tpl"))
    assert launched.returncode == 0, launched.stderr
    shown = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "-i",
            env["DLCLOUD_INVENTORY"],
            "tpl",
            "-m",
            "debug",
            "-a",
            "var=ansible_ssh_private_key_file",
            "-e",
            "ansible_connection=local",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert not proof.exists()
    assert "lookup('pipe'" in shown.stdout
    hosts = inventory.load(Path(env["DLCLOUD_INVENTORY"]).read_text())
    assert "{{" in hosts["all"]["children"]["dlami"]["hosts"]["tpl"]["ansible_ssh_private_key_file"]


# -- names ---------------------------------------------------------------------------------


def test_an_ambiguous_name_is_refused_with_the_candidates(env: dict[str, str]) -> None:
    client = ec2(env)
    image = image_of(client)
    assert dlcloud(env, *launch_args(image, "k9")).returncode == 0
    (mine,) = live(client, Name="k9")
    theirs = run_tagged(client, image, dlcloud_tags(COLLEAGUE, "k9"))
    refused = dlcloud(env, "terminate", "k9", "--any-owner", "--yes")
    assert refused.returncode == exitcodes.USAGE, refused.stdout + refused.stderr
    assert mine["InstanceId"] in refused.stderr and theirs in refused.stderr
    assert "colleague" in refused.stderr
    assert len(live(client, Name="k9")) == 2
    # Without --any-owner the name is the caller's: exactly that one goes.
    done = dlcloud(env, "terminate", "k9", "--yes")
    assert done.returncode == 0, done.stderr
    assert [i["InstanceId"] for i in live(client, Name="k9")] == [theirs]


def test_one_name_in_two_regions_keeps_both_inventory_entries(env: dict[str, str]) -> None:
    client = ec2(env)
    assert dlcloud(env, *launch_args(image_of(client), "twin")).returncode == 0
    west_image = image_of(ec2(env, "us-west-2"))
    second = dlcloud_raw(env, "--region", "us-west-2", *launch_args(west_image, "twin"))
    assert second.returncode == 0, second.stderr
    assert "the host 'twin' of another region is now 'twin.us-east-1'" in second.stdout
    hosts = inventory.load(Path(env["DLCLOUD_INVENTORY"]).read_text())["all"]["children"]["dlami"][
        "hosts"
    ]
    assert sorted(v["dlstation_region"] for v in hosts.values()) == ["us-east-1", "us-west-2"]
    assert hosts["twin"]["dlstation_region"] == "us-west-2"
    assert hosts["twin.us-east-1"]["dlstation_region"] == "us-east-1"


def test_printed_tags_have_control_characters_escaped(env: dict[str, str]) -> None:
    client = ec2(env)
    run_tagged(client, image_of(client), dlcloud_tags("colleague\nforged row\t", "k8"))
    listed = dlcloud(env, "list", "--any-owner")
    assert listed.returncode == 0, listed.stderr
    assert "colleague\\nforged row\\t" in listed.stdout
    assert not any(line.startswith("forged row") for line in listed.stdout.splitlines())
    asked = dlcloud(env, "terminate", "k8", "--any-owner", "--yes")
    assert asked.returncode == 0, asked.stderr
    assert "colleague\\nforged row\\t" in asked.stdout


def test_relaunching_a_name_with_other_options_says_what_differs(env: dict[str, str]) -> None:
    client = ec2(env)
    image = image_of(client)
    assert dlcloud(env, *launch_args(image, "same")).returncode == 0
    argv = launch_args(image, "same")
    argv[argv.index("g5.xlarge")] = "g6.xlarge"
    again = dlcloud(env, *argv)
    assert again.returncode == 0, again.stderr
    assert "--instance-type g5.xlarge (asked: g6.xlarge)" in again.stdout
    assert "terminate it first" in again.stdout and "--ami-id" not in again.stdout
    assert len(live(client, Name="same")) == 1


def test_a_symlinked_inventory_stays_a_link_and_shares_the_files_lock(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").mkdir()
    real = tmp_path / "real" / "dlcloud.yml"
    link = tmp_path / "linked" / "hosts.yml"
    inventory.write(real, {})
    link.symlink_to(real)
    instance = {"InstanceId": "i-0123", "InstanceType": "g5.xlarge", "PublicIpAddress": "1.2.3.4"}
    inventory.add_host(link, "lab", instance, "us-east-1", tmp_path / "key.pem")
    assert link.is_symlink() and link.resolve() == real
    assert inventory.read(real)["lab"]["dlstation_instance_id"] == "i-0123"
    assert (tmp_path / "real" / ".dlcloud.yml.lock").exists()
    assert not (tmp_path / "linked" / ".hosts.yml.lock").exists()
    assert sorted(p.name for p in (tmp_path / "linked").iterdir()) == ["hosts.yml"]


def test_a_launch_waits_for_a_clean_up_holding_the_resource_lock(
    env: dict[str, str], hold: Any
) -> None:
    """terminate and reap hold it alone while they delete unused key pairs and groups; a launch
    setting up those same resources waits, or it could use one as it is deleted."""
    client = ec2(env)
    hold(Path(env["DLCLOUD_KEY_DIR"]) / guard.RESOURCE_LOCK)
    launching = start_dlcloud(env, *launch_args(image_of(client), "r3"), merge_stderr=True)
    seen = wait_for_line(launching.stdout, "waiting for a terminate or reap")
    assert guard.RESOURCE_LOCK in seen[-1]
    assert live(client, Name="r3") == []
    launching.send_signal(signal.SIGTERM)
    rest, _ = launching.communicate(timeout=90)
    assert launching.returncode == exitcodes.TERMINATED, rest
    assert live(client, Name="r3") == []


def test_terminate_waits_for_a_launch_before_removing_what_launches_share(
    env: dict[str, str], hold: Any
) -> None:
    client = ec2(env)
    assert dlcloud(env, *launch_args(image_of(client), "r4")).returncode == 0
    hold(Path(env["DLCLOUD_KEY_DIR"]) / guard.RESOURCE_LOCK)  # as a launch elsewhere holds it
    stopping = start_dlcloud(env, "terminate", "r4", "--yes", merge_stderr=True)
    seen = wait_for_line(stopping.stdout, "waiting for a launch on this machine")
    assert guard.RESOURCE_LOCK in seen[-1]
    groups = client.describe_security_groups()["SecurityGroups"]
    assert any(g["GroupName"].startswith("dlstation-ssh-r4-") for g in groups), "nothing removed"
    stopping.send_signal(signal.SIGTERM)
    rest, _ = stopping.communicate(timeout=90)
    assert stopping.returncode == exitcodes.TERMINATED, rest
