"""dlcloud under races, faults and signals: moto's server behind a proxy that holds and staggers.

Each test makes the timing it needs happen (a call held until released, a reply delivered
after another command finished) and waits on what the processes print, never on the clock.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import exitcodes
from bench.facts.catalog import Catalog
from cloud import inventory
from cloud.aws import Aws
from cloud.launcher import Launcher, LaunchRequest
from tests.harness.aging import age_launch_resources
from tests.harness.dlcloud import (
    CIDR,
    dlcloud,
    ec2,
    image_of,
    launch_args,
    live,
    read_until,
    start_dlcloud,
)
from tests.harness.ec2_proxy import Ec2Proxy, Query

pytestmark = [pytest.mark.motoserver, pytest.mark.slow]
KEY = "dlstation-us-east-1"
TRIALS = 50


@pytest.fixture
def proxy(moto_env: dict[str, str]) -> Iterator[Ec2Proxy]:
    with Ec2Proxy(moto_env["AWS_ENDPOINT_URL"]) as running:
        yield running


@pytest.fixture
def env(moto_env: dict[str, str], proxy: Ec2Proxy) -> dict[str, str]:
    """moto_env, with dlcloud talking to moto through the proxy."""
    return {**moto_env, "AWS_ENDPOINT_URL": proxy.url, "PYTHONUNBUFFERED": "1"}


def key_pairs(client: Any) -> list[str]:
    return [k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]]


def groups_of(client: Any, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The security groups these instances name, as AWS describes them now (gone: missing)."""
    wanted = [g["GroupId"] for i in instances for g in i["SecurityGroups"]]
    existing = client.describe_security_groups()["SecurityGroups"]
    return [g for g in existing if g["GroupId"] in wanted]


# -- launch against terminate and reap ------------------------------------------------------


@pytest.mark.parametrize("held", ["CreateTags", "RunInstances"])
def test_terminate_during_a_launch_keeps_what_the_launch_set_up(
    env: dict[str, str], proxy: Ec2Proxy, held: str
) -> None:
    client = ec2(env)
    image = image_of(client)
    keys = Path(env["DLCLOUD_KEY_DIR"])
    assert dlcloud(env, *launch_args(image, "old")).returncode == 0
    age_launch_resources(client, keys)
    # The new launch set up key and group and is on its way: marking them, or RunInstances.
    hold = proxy.hold(held)
    launching = start_dlcloud(env, *launch_args(image, "new"))
    assert hold.arrived.wait(60), "the launch never got that far"
    terminating = start_dlcloud(env, "terminate", "old", "--yes")
    waited = read_until(terminating.stdout, "waiting for a launch on this machine")
    assert "waiting for a launch" in "".join(waited), "".join(waited)
    hold.release()
    _, err = launching.communicate(timeout=120)
    assert launching.returncode == 0, err
    rest, err = terminating.communicate(timeout=120)
    assert terminating.returncode == 0, err
    assert "deleted key pair" not in rest, rest
    assert key_pairs(client) == [KEY] and (keys / f"{KEY}.pem").is_file()
    launched = live(client, Name="new")
    assert len(launched) == 1 and len(groups_of(client, launched)) == 1


def is_region_listing(query: Query) -> bool:
    """terminate's "which instances use this key and group" listing, not a wait or a name."""
    filters = [v for k, v in query.items() if k.startswith("Filter.") and k.endswith(".Name")]
    return "InstanceId.1" not in query and filters == [["instance-state-name"]]


def test_a_launch_elsewhere_while_terminate_lists_keeps_key_pair_and_file(
    env: dict[str, str], proxy: Ec2Proxy, tmp_path: Path
) -> None:
    client = ec2(env)
    image = image_of(client)
    here = Path(env["DLCLOUD_KEY_DIR"])
    assert dlcloud(env, *launch_args(image, "old")).returncode == 0
    age_launch_resources(client, here)
    elsewhere = tmp_path / "other-machine-keys"  # the user's second machine, key copied
    elsewhere.mkdir()
    (elsewhere / f"{KEY}.pem").write_bytes((here / f"{KEY}.pem").read_bytes())
    other = {**env, "DLCLOUD_KEY_DIR": str(elsewhere)}
    # terminate's listing is answered with what AWS knew before the other launch: late.
    hold = proxy.hold("DescribeInstances", after=True, where=is_region_listing)
    terminating = start_dlcloud(env, "terminate", "old", "--yes")
    assert hold.arrived.wait(60)
    launched = dlcloud(other, *launch_args(image, "new"))
    assert launched.returncode == 0, launched.stderr
    hold.release()
    out, err = terminating.communicate(timeout=120)
    assert terminating.returncode == 0, err
    assert "deleted key pair" not in out, out
    assert f"kept key pair {KEY} and its key file: a launch set it up" in out
    assert key_pairs(client) == [KEY]
    assert (here / f"{KEY}.pem").is_file() and (elsewhere / f"{KEY}.pem").is_file()


# -- the inventory ---------------------------------------------------------------------------


def test_concurrent_inventory_writes_lose_nothing(tmp_path: Path) -> None:
    """Five launches ending at once, 50 times: every one's entry is in the file."""
    for trial in range(TRIALS):
        path = tmp_path / f"inventory-{trial}.yml"
        barrier = threading.Barrier(5)

        def add(number: int, path: Path = path, barrier: threading.Barrier = barrier) -> None:
            instance = {"InstanceId": f"i-{number}", "InstanceType": "g5.xlarge"}
            barrier.wait()
            inventory.add_host(path, f"lab{number}", instance, "us-east-1", tmp_path / "k.pem")

        threads = [threading.Thread(target=add, args=(n,)) for n in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(inventory.read(path)) == [f"lab{n}" for n in range(5)], f"trial {trial}"


def test_five_concurrent_launches_all_reach_the_inventory(env: dict[str, str]) -> None:
    client = ec2(env)
    image = image_of(client)
    names = [f"lab{n}" for n in range(5)]
    runs = [start_dlcloud(env, *launch_args(image, name)) for name in names]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    document = inventory.load(Path(env["DLCLOUD_INVENTORY"]).read_text())
    hosts = document["all"]["children"]["dlami"]["hosts"]
    assert sorted(hosts) == names
    assert len(live(client)) == 5


# -- one name, two machines ------------------------------------------------------------------


def test_one_name_from_two_machines_gives_one_instance(
    env: dict[str, str], proxy: Ec2Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RunInstances 0.85 s apart from two machines, 50 times: one instance, one survivor."""
    for key, value in env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    image = image_of(ec2(env))
    catalog = Catalog.load()
    machines = [
        Launcher(
            Aws("us-east-1"),
            catalog,
            checkip=lambda: "203.0.113.7",
            key_folder=tmp_path / f"machine-{m}",
            waiter_config={"Delay": 1, "MaxAttempts": 60},
            say=lambda line: None,
        )
        for m in "ab"
    ]
    for trial in range(TRIALS):
        proxy.stagger("RunInstances", 0.85)
        name = f"twice{trial}"
        results: dict[int, str] = {}
        errors: list[BaseException] = []

        def run(
            m: int,
            name: str = name,
            results: dict[int, str] = results,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                request = LaunchRequest(
                    "g5.xlarge", name, ami_id=image, ssh_cidr=CIDR, key_name=f"machine-{m}"
                )
                plan = machines[m].preflight(request)
                results[m] = machines[m].launch(plan)["InstanceId"]
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(m,)) for m in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        survivors = [i["InstanceId"] for i in live(ec2(env), Name=name)]
        assert len(survivors) == 1, f"trial {trial}: {survivors}"
        assert set(results.values()) == set(survivors), f"trial {trial}: {results}"


# -- signals ---------------------------------------------------------------------------------

STOPS = [
    (signal.SIGINT, exitcodes.INTERRUPTED),
    (signal.SIGTERM, exitcodes.TERMINATED),
    (signal.SIGHUP, exitcodes.TERMINATED),
]


@pytest.mark.parametrize(("signum", "code"), STOPS, ids=str)
def test_a_signal_while_run_instances_is_in_flight_terminates_that_instance(
    env: dict[str, str], proxy: Ec2Proxy, signum: int, code: int
) -> None:
    client = ec2(env)
    hold = proxy.hold("RunInstances", after=True)  # AWS started it; the answer is on its way
    launching = start_dlcloud(env, *launch_args(image_of(client), "inflight"))
    assert hold.arrived.wait(60)
    (started,) = live(client, Name="inflight")
    launching.send_signal(signum)
    _, err = launching.communicate(timeout=60)
    assert launching.returncode == code, err
    name = signal.Signals(signum).name
    assert f"dlcloud: interrupted by {name}; terminated {started['InstanceId']} (inflight)" in err
    assert live(client, Name="inflight") == []


def test_a_signal_while_waiting_for_the_listing_terminates_the_instance(
    env: dict[str, str], proxy: Ec2Proxy
) -> None:
    client = ec2(env)
    run = proxy.hold("RunInstances", after=True)
    launching = start_dlcloud(env, *launch_args(image_of(client), "listing"))
    assert run.arrived.wait(60)
    # From here AWS "lags": the launch's wait for its instance to be listed never succeeds.
    listed = proxy.hold("DescribeInstances", count=99, where=is_name_wait)
    run.release()
    assert listed.arrived.wait(60)
    launching.send_signal(signal.SIGINT)
    _, err = launching.communicate(timeout=60)
    assert launching.returncode == exitcodes.INTERRUPTED, err
    assert "terminated i-" in err and "(listing)" in err
    assert live(client, Name="listing") == []


def is_name_wait(query: Query) -> bool:
    return any(v == ["instance-id"] for k, v in query.items() if k.startswith("Filter."))


def test_a_signal_before_anything_started_says_nothing_was_terminated(
    env: dict[str, str], proxy: Ec2Proxy
) -> None:
    client = ec2(env)
    hold = proxy.hold("CreateSecurityGroup")  # setting up the firewall: no instance yet
    launching = start_dlcloud(env, *launch_args(image_of(client), "early"))
    assert hold.arrived.wait(60)
    launching.send_signal(signal.SIGTERM)
    hold.release()
    _, err = launching.communicate(timeout=60)
    assert launching.returncode == exitcodes.TERMINATED, err
    assert "anything it had started" not in err
    assert "interrupted by SIGTERM; it had no instance running, nothing to terminate" in err
    assert live(client) == []
