"""`dlcloud launch` again, with another --ssh-cidr, of a name that runs: its own SSH group then
admits the new address only, or says what else still reaches port 22; a dry run changes nothing;
it waits for a clean-up that holds the resource lock; a group gone is not made again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloud import guard
from tests.harness.dlcloud import (
    CIDR,
    dlcloud,
    ec2,
    image_of,
    launch_args,
    live,
    lock_holders,
    read_until,
    start_dlcloud,
)

pytestmark = [pytest.mark.motoserver, pytest.mark.slow]

CAFE = "198.51.100.9/32"


def launched(env: dict[str, str], name: str) -> tuple[Any, str, str]:
    """A launch of `name` from CIDR: the client, the image and the id of its SSH group."""
    client = ec2(env)
    image = image_of(client)
    first = dlcloud(env, *launch_args(image, name))
    assert first.returncode == 0, first.stderr
    (instance,) = live(client, Name=name)
    return client, image, guard.tags_of(instance)[guard.TAG_GROUP]


def group(client: Any, group_id: str) -> dict[str, Any]:
    (found,) = client.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return dict(found)


def test_launch_again_from_another_address_moves_ssh_to_it_only(
    moto_env: dict[str, str],
) -> None:
    client, image, group_id = launched(moto_env, "moving")
    same = dlcloud(moto_env, *launch_args(image, "moving"))
    assert same.returncode == 0 and "SSH now" not in same.stdout
    moved = dlcloud(moto_env, *launch_args(image, "moving", "--ssh-cidr", CAFE))
    assert moved.returncode == 0, moved.stderr
    assert f"'moving': SSH now from {CAFE} only (was: {CIDR})" in moved.stdout
    assert guard.port_22_sources(group(client, group_id)) == {CAFE}, "the old address is revoked"
    assert len(live(client, Name="moving")) == 1


def test_a_dry_run_with_another_address_only_says_what_it_would_do(
    moto_env: dict[str, str],
) -> None:
    client, image, group_id = launched(moto_env, "dry")
    tried = dlcloud(moto_env, *launch_args(image, "dry", "--ssh-cidr", CAFE, "--dry-run"))
    assert tried.returncode == 0, tried.stderr
    assert f"dry run: 'dry' would admit SSH from {CAFE} only (now: {CIDR})" in tried.stdout
    assert tried.stdout.rstrip().endswith("dry run: nothing was changed")
    assert guard.port_22_sources(group(client, group_id)) == {CIDR}


@pytest.mark.parametrize(
    "rule",
    [
        {"IpProtocol": "-1"},
        {"IpProtocol": "tcp", "FromPort": 20, "ToPort": 23},
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 23},
    ],
    ids=["all-traffic", "port-range", "port-range-from-22"],
)
def test_a_rule_dlcloud_did_not_add_is_named_not_said_to_be_gone(
    moto_env: dict[str, str], rule: dict[str, Any]
) -> None:
    client, image, group_id = launched(moto_env, "extra")
    client.authorize_security_group_ingress(
        GroupId=group_id, IpPermissions=[{**rule, "IpRanges": [{"CidrIp": CIDR}]}]
    )
    moved = dlcloud(moto_env, *launch_args(image, "extra", "--ssh-cidr", CAFE))
    assert moved.returncode == 0, moved.stderr
    assert "only" not in moved.stdout.split("SSH now", 1)[1].splitlines()[0]
    assert (
        f"'extra': SSH now from {CAFE} (was: {CIDR}); rules dlcloud did not add still let "
        f"{CIDR} reach port 22: remove them in the group {group_id}"
    ) in moved.stdout
    assert guard.port_22_sources(group(client, group_id)) == {CAFE, CIDR}


def test_moving_the_rule_waits_for_a_clean_up_that_holds_the_resource_lock(
    moto_env: dict[str, str],
) -> None:
    client, image, group_id = launched(moto_env, "racing")
    lock = Path(moto_env["DLCLOUD_KEY_DIR"]) / guard.RESOURCE_LOCK
    with lock_holders() as take:
        take(lock)  # as terminate and reap hold it while they delete unused groups
        moving = start_dlcloud(
            {**moto_env, "PYTHONUNBUFFERED": "1"},
            *launch_args(image, "racing", "--ssh-cidr", CAFE),
            merge_stderr=True,
        )
        seen = "".join(read_until(moving.stdout, "waiting for"))
        assert "waiting for" in seen, seen
        assert guard.port_22_sources(group(client, group_id)) == {CIDR}, "changed while held"
    rest, _ = moving.communicate(timeout=120)
    assert moving.returncode == 0, seen + rest
    assert f"'racing': SSH now from {CAFE} only" in rest
    assert guard.port_22_sources(group(client, group_id)) == {CAFE}


def test_a_group_gone_under_the_instance_is_not_made_again(moto_env: dict[str, str]) -> None:
    """As when it was deleted by hand: a new group of that name would admit CAFE on no
    instance, and be left behind."""
    client, image, group_id = launched(moto_env, "gone")
    client.delete_security_group(GroupId=group_id)
    moved = dlcloud(moto_env, *launch_args(image, "gone", "--ssh-cidr", CAFE))
    assert moved.returncode == 0, moved.stderr
    assert f"'gone': its SSH group {group_id} is gone; nothing was changed" in moved.stdout
    made = [
        g["GroupId"]
        for g in client.describe_security_groups()["SecurityGroups"]
        if g["GroupName"].startswith("dlstation-ssh-gone-")
    ]
    assert made == []
