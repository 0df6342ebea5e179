"""The project's instances: list them with their cost, stop, terminate, and reap leftovers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cloud import guard
from cloud.aws import CloudError, aws_errors, error_code
from cloud.catalog import Catalog, CatalogError

TERMINATE_WAIT = {"Delay": 5, "MaxAttempts": 120}


def project_instances(ec2: Any, states: list[str] | None = None) -> list[dict[str, Any]]:
    """Every instance tagged Project=dlstation, optionally only in the given states."""
    filters = guard.project_filter()
    if states:
        filters.append({"Name": "instance-state-name", "Values": states})
    found = []
    with aws_errors("listing instances"):
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                found.extend(reservation["Instances"])
    return found


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def describe(
    instance: dict[str, Any], region: str, catalog: Catalog, now: datetime
) -> dict[str, Any]:
    """One row of `dlcloud list`: state, age, time left, cost so far (running time x price)."""
    tags = guard.tags_of(instance)
    launched: datetime = instance["LaunchTime"]
    hours = max((now - launched).total_seconds(), 0) / 3600
    expires = parse_time(tags.get(guard.TAG_EXPIRES))
    spot = instance.get("InstanceLifecycle") == "spot"
    try:
        price = catalog.price(instance["InstanceType"], region, spot)
        hourly = price.usd_per_hour
    except CatalogError:
        hourly = None
    running = instance["State"]["Name"] in ("pending", "running")
    return {
        "name": tags.get(guard.TAG_NAME, "?"),
        "id": instance["InstanceId"],
        "region": region,
        "type": instance["InstanceType"],
        "market": "spot" if spot else "on-demand",
        "state": instance["State"]["Name"],
        "age_h": hours,
        "left_h": None if expires is None else (expires - now).total_seconds() / 3600,
        # An upper bound: stopped time is not billed, but we cannot see it from here.
        "cost_usd": None if hourly is None else hours * hourly,
        "ip": instance.get("PublicIpAddress") or instance.get("PrivateIpAddress"),
        "expired": expires is not None and expires <= now and running,
    }


def find_by_name(ec2: Any, name: str) -> dict[str, Any]:
    states = ["pending", "running", "stopping", "stopped"]
    matches = [
        i for i in project_instances(ec2, states) if guard.tags_of(i).get(guard.TAG_NAME) == name
    ]
    if not matches:
        raise CloudError(f"no live dlstation instance named {name!r}; see `dlcloud list`", 2)
    return matches[0]


def stop(ec2: Any, instance: dict[str, Any]) -> None:
    with aws_errors("stopping the instance"):
        ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
        ec2.get_waiter("instance_stopped").wait(
            InstanceIds=[instance["InstanceId"]], WaiterConfig=TERMINATE_WAIT
        )


@dataclass
class Cleanup:
    """What terminate or reap removed."""

    instances: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)
    key_pairs: list[str] = field(default_factory=list)
    key_files: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        parts = [
            ("terminated", self.instances),
            ("deleted volume", self.volumes),
            ("deleted security group", self.security_groups),
            ("deleted key pair", self.key_pairs),
            ("deleted key file", self.key_files),
        ]
        return [f"{label} {item}" for label, items in parts for item in items]


def terminate(ec2: Any, instances: list[dict[str, Any]], key_folder: Path) -> Cleanup:
    """Terminate and wait; then remove the group and key they used if nothing else does."""
    done = Cleanup()
    ids = [i["InstanceId"] for i in instances]
    if not ids:
        return done
    with aws_errors("terminating"):
        ec2.terminate_instances(InstanceIds=ids)
        ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig=TERMINATE_WAIT)
    done.instances = ids
    groups = {guard.tags_of(i).get(guard.TAG_GROUP) for i in instances} - {None}
    keys = {guard.tags_of(i).get(guard.TAG_KEY) for i in instances} - {None}
    remove_unused(ec2, {g for g in groups if g}, {k for k in keys if k}, key_folder, done)
    return done


def remove_unused(
    ec2: Any, groups: set[str], keys: set[str], key_folder: Path, done: Cleanup
) -> None:
    """Delete dlcloud's security groups and key pairs that no live instance uses."""
    live = project_instances(ec2, ["pending", "running", "stopping", "stopped", "shutting-down"])
    used_groups = {g["GroupId"] for i in live for g in i.get("SecurityGroups", [])}
    used_keys = {i.get("KeyName") for i in live}
    for group in sorted(groups - used_groups):
        try:
            ec2.delete_security_group(GroupId=group)
            done.security_groups.append(group)
        except ClientError as error:
            # Another tool's instance may still use it; leaving it costs nothing.
            if error_code(error) not in ("DependencyViolation", "InvalidGroup.NotFound"):
                raise
    for key in sorted(keys - used_keys):
        with aws_errors("deleting key pair"):
            ec2.delete_key_pair(KeyName=key)
        done.key_pairs.append(key)
        path = key_folder / f"{key}.pem"
        if path.exists():
            path.unlink()
            done.key_files.append(str(path))


@dataclass
class ReapPlan:
    """Leftovers that cost money or clutter: found first, removed after confirmation."""

    expired: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    security_groups: set[str] = field(default_factory=set)
    key_pairs: set[str] = field(default_factory=set)

    def empty(self) -> bool:
        return not (self.expired or self.volumes or self.security_groups or self.key_pairs)

    def lines(self) -> list[str]:
        lines = [
            f"expired instance {i['InstanceId']} ({guard.tags_of(i).get(guard.TAG_NAME, '?')}, "
            f"expired {guard.tags_of(i).get(guard.TAG_EXPIRES)})"
            for i in self.expired
        ]
        lines += [f"orphaned volume {v}" for v in self.volumes]
        lines += [f"unused security group {g}" for g in sorted(self.security_groups)]
        lines += [f"unused key pair {k}" for k in sorted(self.key_pairs)]
        return lines


def find_leftovers(ec2: Any, now: datetime) -> ReapPlan:
    """Expired instances, unattached project volumes, groups and keys with no live instance."""
    plan = ReapPlan()
    live_states = ["pending", "running", "stopping", "stopped"]
    for instance in project_instances(ec2, live_states):
        expires = parse_time(guard.tags_of(instance).get(guard.TAG_EXPIRES))
        if expires is not None and expires <= now:
            plan.expired.append(instance)
    with aws_errors("listing volumes"):
        volumes = ec2.describe_volumes(
            Filters=[*guard.project_filter(), {"Name": "status", "Values": ["available"]}]
        )["Volumes"]
    plan.volumes = [v["VolumeId"] for v in volumes]
    survivors = [
        i for i in project_instances(ec2, [*live_states, "shutting-down"]) if i not in plan.expired
    ]
    used_groups = {g["GroupId"] for i in survivors for g in i.get("SecurityGroups", [])}
    used_keys = {i.get("KeyName") for i in survivors}
    with aws_errors("listing security groups and key pairs"):
        groups = ec2.describe_security_groups(Filters=guard.project_filter())["SecurityGroups"]
        keys = ec2.describe_key_pairs(Filters=guard.project_filter())["KeyPairs"]
    plan.security_groups = {g["GroupId"] for g in groups} - used_groups
    plan.key_pairs = {k["KeyName"] for k in keys} - used_keys
    return plan


def reap(ec2: Any, plan: ReapPlan, key_folder: Path) -> Cleanup:
    done = terminate(ec2, plan.expired, key_folder)
    for volume in plan.volumes:
        with aws_errors(f"deleting volume {volume}"):
            ec2.delete_volume(VolumeId=volume)
        done.volumes.append(volume)
    remove_unused(ec2, plan.security_groups, plan.key_pairs, key_folder, done)
    return done
