"""The project's instances: list them with their cost, stop, terminate, and reap leftovers."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bench.facts.catalog import Catalog, CatalogError
from cloud import guard, idle
from cloud.aws import CloudError, aws_errors, error_code, explain

TERMINATE_WAIT = {"Delay": 5, "MaxAttempts": 120}
IN_USE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
SPOT_INTERRUPTED = "Server.SpotInstanceTermination"


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


def region_instances(ec2: Any, states: list[str]) -> list[dict[str, Any]]:
    """Every instance in the region in these states, whoever launched it."""
    found = []
    with aws_errors("listing the region's instances"):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": states}]
        )
        for page in pages:
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
    hourly = planned_price(instance)
    if hourly is None:
        try:
            hourly = catalog.price(instance["InstanceType"], region, spot).usd_per_hour
        except CatalogError:
            hourly = None
    running = instance["State"]["Name"] in ("pending", "running")
    reason = instance.get("StateReason", {})
    interrupted = reason.get("Code") == SPOT_INTERRUPTED
    return {
        "name": tags.get(guard.TAG_NAME, "?"),
        "id": instance["InstanceId"],
        "region": region,
        "type": instance["InstanceType"],
        "market": "spot" if spot else "on-demand",
        "state": "interrupted" if interrupted else instance["State"]["Name"],
        "reason": reason.get("Message", "") if interrupted else "",
        "idle_stop": tags.get(guard.TAG_IDLE, "-"),
        "age_h": hours,
        "left_h": None if expires is None else (expires - now).total_seconds() / 3600,
        # An upper bound: stopped time is not billed, but we cannot see it from here.
        "cost_usd": None if hourly is None else hours * hourly,
        "ip": instance.get("PublicIpAddress") or instance.get("PrivateIpAddress"),
        "expired": expires is not None and expires <= now and running,
    }


def planned_price(instance: dict[str, Any]) -> float | None:
    """The hourly price launch planned with (its tag), if it recorded one."""
    try:
        return float(guard.tags_of(instance)[guard.TAG_PRICE])
    except (KeyError, ValueError):
        return None


def shown_in_list(instance: dict[str, Any]) -> bool:
    """Live instances, and spot instances AWS interrupted (so the user learns why it is gone)."""
    if instance["State"]["Name"] != "terminated":
        return True
    return bool(instance.get("StateReason", {}).get("Code") == SPOT_INTERRUPTED)


def idle_time(ec2: Any, instance: dict[str, Any]) -> str | None:
    """The idle watchdog's last decision from the console, when AWS has one to show."""
    try:
        output = ec2.get_console_output(InstanceId=instance["InstanceId"], Latest=True)
        text = base64.b64decode(output.get("Output") or "").decode(errors="replace")
    except (ClientError, BotoCoreError, ValueError):
        return None
    return idle.last_decision(text)


def bill_line(instance: dict[str, Any], now: datetime) -> str:
    """How long it ran and what that cost at the price launch planned with."""
    tags = guard.tags_of(instance)
    hours = max((now - instance["LaunchTime"]).total_seconds(), 0) / 3600
    minutes = round(hours * 60)
    ran = f"{minutes // 60}h{minutes % 60:02d}m"
    head = f"{tags.get(guard.TAG_NAME, '?')} ({instance['InstanceId']}): ran {ran}"
    hourly = planned_price(instance)
    if hourly is None:
        return f"{head}, cost unknown (no planned price recorded)"
    basis = tags.get(guard.TAG_PRICE_BASIS, "planned price")
    return f"{head}, ${hours * hourly:.2f} at ${hourly:.4f}/h ({basis})"


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
    kept: list[str] = field(default_factory=list)
    bills: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        parts = [
            ("terminated", self.instances),
            ("deleted volume", self.volumes),
            ("deleted security group", self.security_groups),
            ("deleted key pair", self.key_pairs),
            ("deleted key file", self.key_files),
        ]
        done = [f"{label} {item}" for label, items in parts for item in items]
        bills = [f"cost: {bill}" for bill in self.bills]
        kept = [f"kept {item}" for item in self.kept]
        return done[: len(self.instances)] + bills + done[len(self.instances) :] + kept


def terminate(
    ec2: Any, instances: list[dict[str, Any]], key_folder: Path, now: datetime | None = None
) -> Cleanup:
    """Terminate and wait, bill each, then remove what dlcloud created for them if now unused."""
    done = Cleanup()
    ids = [i["InstanceId"] for i in instances]
    if not ids:
        return done
    with aws_errors("terminating"):
        ec2.terminate_instances(InstanceIds=ids)
        ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig=TERMINATE_WAIT)
    done.instances = ids
    ended = now or datetime.now(timezone.utc)
    done.bills = [bill_line(i, ended) for i in instances]
    groups = {guard.tags_of(i).get(guard.TAG_GROUP) for i in instances} - {None}
    keys = {guard.tags_of(i).get(guard.TAG_KEY) for i in instances} - {None}
    remove_unused(ec2, {g for g in groups if g}, {k for k in keys if k}, key_folder, done)
    return done


def remove_unused(
    ec2: Any, groups: set[str], keys: set[str], key_folder: Path, done: Cleanup
) -> None:
    """Delete the groups and key pairs dlcloud created that no instance in the region uses.

    What the user brought (no creation tag) is never deleted, nor a key file dlcloud did
    not write; "in use" counts every instance in the region, not only this project's.
    """
    live = region_instances(ec2, IN_USE_STATES)
    used_groups = {g["GroupId"] for i in live for g in i.get("SecurityGroups", [])}
    used_keys = {i.get("KeyName") for i in live}
    for group_id in sorted(groups):
        group = describe_group(ec2, group_id)
        if group is None:
            continue
        if not guard.created_by_dlcloud(group):
            done.kept.append(f"security group {group_id}: dlcloud did not create it")
        elif group_id in used_groups:
            done.kept.append(f"security group {group_id}: another instance uses it")
        else:
            delete_group(ec2, group_id, done)
    for name in sorted(keys):
        pair = guard.find_key_pair(ec2, name)
        if pair is None:
            continue
        if not guard.created_by_dlcloud(pair):
            done.kept.append(f"key pair {name} and its key file: dlcloud did not create them")
            continue
        if name in used_keys:
            done.kept.append(f"key pair {name}: another instance uses it")
            continue
        with aws_errors("deleting key pair"):
            ec2.delete_key_pair(KeyName=name)
        done.key_pairs.append(name)
        path = key_folder / f"{name}.pem"
        if guard.remove_key_file(path):
            done.key_files.append(str(path))
        elif path.exists():
            done.kept.append(f"key file {path}: dlcloud did not write it (or it changed)")


def describe_group(ec2: Any, group_id: str) -> dict[str, Any] | None:
    try:
        groups = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    except ClientError as error:
        if error_code(error).startswith("InvalidGroup"):
            return None
        raise explain(error, "looking up security group") from error
    return groups[0] if groups else None


def delete_group(ec2: Any, group_id: str, done: Cleanup) -> None:
    try:
        ec2.delete_security_group(GroupId=group_id)
        done.security_groups.append(group_id)
    except ClientError as error:
        # An instance launched since we listed may use it; leaving it costs nothing.
        if error_code(error) not in ("DependencyViolation", "InvalidGroup.NotFound"):
            raise explain(error, "deleting security group") from error
        done.kept.append(f"security group {group_id}: {error_code(error)}")


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
    expired = {i["InstanceId"] for i in plan.expired}
    survivors = [i for i in region_instances(ec2, IN_USE_STATES) if i["InstanceId"] not in expired]
    used_groups = {g["GroupId"] for i in survivors for g in i.get("SecurityGroups", [])}
    used_keys = {i.get("KeyName") for i in survivors}
    created = [{"Name": f"tag:{guard.TAG_CREATED_BY}", "Values": [guard.CREATED_BY]}]
    with aws_errors("listing security groups and key pairs"):
        groups = ec2.describe_security_groups(Filters=created)["SecurityGroups"]
        keys = ec2.describe_key_pairs(Filters=created)["KeyPairs"]
    plan.security_groups = {g["GroupId"] for g in groups} - used_groups
    plan.key_pairs = {k["KeyName"] for k in keys} - used_keys
    return plan


def reap(ec2: Any, plan: ReapPlan, key_folder: Path, now: datetime | None = None) -> Cleanup:
    done = terminate(ec2, plan.expired, key_folder, now)
    for volume in plan.volumes:
        with aws_errors(f"deleting volume {volume}"):
            ec2.delete_volume(VolumeId=volume)
        done.volumes.append(volume)
    remove_unused(ec2, plan.security_groups, plan.key_pairs, key_folder, done)
    return done
