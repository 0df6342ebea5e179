"""The project's instances: list them with their cost, stop, terminate, and reap leftovers."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bench.exitcodes import USAGE
from bench.facts.catalog import Catalog, CatalogError
from cloud import guard, idle, interrupts, inventory
from cloud.aws import (
    IN_USE_STATES,
    LIVE_STATES,
    UP_STATES,
    CloudError,
    aws_errors,
    error_code,
    explain,
)

TERMINATE_WAIT = {"Delay": 5, "MaxAttempts": 120}
SPOT_INTERRUPTED = "Server.SpotInstanceTermination"


def project_instances(ec2: Any, states: list[str] | None = None) -> list[dict[str, Any]]:
    """Every instance tagged Project=dlstation (whoever tagged it), optionally in these states."""
    return _instances(ec2, guard.project_filter(), states)


def owned_instances(
    ec2: Any, owner: str | None, states: list[str] | None = None
) -> list[dict[str, Any]]:
    """The instances dlcloud created for this owner (for any owner when None)."""
    return _instances(ec2, guard.owned_filters(owner), states)


def _instances(
    ec2: Any, filters: list[dict[str, Any]], states: list[str] | None
) -> list[dict[str, Any]]:
    if states:
        filters = [*filters, {"Name": "instance-state-name", "Values": states}]
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
    running = instance["State"]["Name"] in UP_STATES
    reason = instance.get("StateReason", {})
    interrupted = reason.get("Code") == SPOT_INTERRUPTED
    return {
        "name": guard.name_of(instance),
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


def find_by_name(ec2: Any, name: str, owner: str | None) -> dict[str, Any]:
    """The owner's live dlcloud instance of that name (any owner's when owner is None)."""
    guard.check_name(name)
    matches = [
        i
        for i in owned_instances(ec2, owner, LIVE_STATES)
        if guard.tags_of(i).get(guard.TAG_NAME) == name
    ]
    if not matches:
        raise CloudError(f"no live dlstation instance named {name!r}; see `dlcloud list`", USAGE)
    if len(matches) > 1:
        candidates = ", ".join(f"{i['InstanceId']} ({guard.owner_of(i)}'s)" for i in matches)
        raise CloudError(
            f"{len(matches)} live instances are named {name!r}: {candidates}; drop --any-owner "
            "to act on yours, or terminate one by id in the EC2 console",
            USAGE,
        )
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
    hosts: list[str] = field(default_factory=list)  # removed from the inventory
    kept: list[str] = field(default_factory=list)
    bills: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        parts = [
            ("terminated", self.instances),
            ("deleted volume", self.volumes),
            ("deleted security group", self.security_groups),
            ("deleted key pair", self.key_pairs),
            ("deleted key file", self.key_files),
            ("removed from the inventory:", self.hosts),
        ]
        done = [f"{label} {item}" for label, items in parts for item in items]
        bills = [f"cost: {bill}" for bill in self.bills]
        kept = [f"kept {item}" for item in self.kept]
        return done[: len(self.instances)] + bills + done[len(self.instances) :] + kept


@dataclass(frozen=True)
class Scope:
    """Whose resources a terminate or reap may remove, and the inventory it keeps current."""

    owner: str
    key_folder: Path
    inventory: Path | None = None


def terminate(
    ec2: Any, instances: list[dict[str, Any]], scope: Scope, now: datetime | None = None
) -> Cleanup:
    """Terminate and wait, bill each, then remove what dlcloud created for them if now unused."""
    done = Cleanup()
    ids = [i["InstanceId"] for i in instances]
    if not ids:
        return done
    with aws_errors("terminating"):
        ec2.terminate_instances(InstanceIds=ids)
    try:
        with aws_errors("terminating"):
            ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig=TERMINATE_WAIT)
        done.instances = ids
        ended = now or datetime.now(timezone.utc)
        done.bills = [bill_line(i, ended) for i in instances]
        groups = {guard.tags_of(i).get(guard.TAG_GROUP) for i in instances} - {None}
        keys = {guard.tags_of(i).get(guard.TAG_KEY) for i in instances} - {None}
        remove_unused(ec2, {g for g in groups if g}, {k for k in keys if k}, scope, done, now=ended)
    except interrupts.Interrupted as error:
        # Stopped while waiting or tidying up: the user still learns what was terminated.
        error.cleaned = True
        error.terminated += [
            f"{i['InstanceId']} ({guard.tags_of(i).get(guard.TAG_NAME, '?')})" for i in instances
        ]
        raise
    return done


def tidy_inventory(ec2: Any, scope: Scope, live: list[dict[str, Any]], done: Cleanup) -> None:
    """The inventory loses every host of this region whose instance is no longer live."""
    if scope.inventory is None:
        return
    live_ids = {i["InstanceId"] for i in live if i["State"]["Name"] != "shutting-down"}
    gone = inventory.prune(scope.inventory, ec2.meta.region_name, live_ids)
    done.hosts += [h for h in gone if h not in done.hosts]


def remove_unused(
    ec2: Any,
    groups: set[str],
    keys: set[str],
    scope: Scope,
    done: Cleanup,
    *,
    now: datetime | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """Delete the caller's groups and key pairs that no instance in the region uses.

    Only what dlcloud created for this caller is deleted (creation and owner tags), never a
    key file dlcloud did not write or one a host in the inventory still names; "in use"
    counts every instance in the region, not only this project's. No launch on this machine
    runs between the listing and the deletion (the resource lock), and what a launch anywhere
    set up in the last few minutes (guard.GRACE) is kept.
    """
    now = now or datetime.now(timezone.utc)
    with guard.resource_lock(scope.key_folder, exclusive=True, say=say):
        live = region_instances(ec2, IN_USE_STATES)
        tidy_inventory(ec2, scope, live, done)
        used_groups = {g["GroupId"] for i in live for g in i.get("SecurityGroups", [])}
        for group_id in sorted(groups):
            group = describe_group(ec2, group_id)
            if group is None:
                continue
            if not guard.created_by_dlcloud(group):
                done.kept.append(f"security group {group_id}: dlcloud did not create it")
            elif not guard.owned(group, scope.owner):
                done.kept.append(f"security group {group_id}: it is {guard.owner_of(group)}'s")
            elif group_id in used_groups:
                done.kept.append(f"security group {group_id}: another instance uses it")
            elif guard.recently_used(group, now):
                done.kept.append(f"security group {group_id}: {RECENT}")
            else:
                delete_group(ec2, group_id, done)
        used_keys = {str(i.get("KeyName")) for i in live}
        for name in sorted(keys):
            remove_key(ec2, name, scope, used=used_keys, done=done, now=now)


RECENT = f"a launch set it up less than {guard.GRACE.seconds // 60} minutes ago"


def remove_key(
    ec2: Any, name: str, scope: Scope, *, used: set[str], done: Cleanup, now: datetime
) -> None:
    """The caller's key pair and its file, unless an instance or an inventory host needs them."""
    pair = guard.find_key_pair(ec2, name)
    if pair is None:
        return
    path = scope.key_folder / f"{name}.pem"
    named = {} if scope.inventory is None else inventory.key_files(scope.inventory)
    if not guard.created_by_dlcloud(pair):
        done.kept.append(f"key pair {name} and its key file: dlcloud did not create them")
    elif not guard.owned(pair, scope.owner):
        done.kept.append(f"key pair {name}: it is {guard.owner_of(pair)}'s")
    elif name in used:
        done.kept.append(f"key pair {name}: another instance uses it")
    elif str(path) in named:
        done.kept.append(f"key pair {name} and {path}: host {named[str(path)]} names it")
    elif guard.recently_used(pair, now) or guard.young_file(path, now):
        done.kept.append(f"key pair {name} and its key file: {RECENT}")
    else:
        with aws_errors("deleting key pair"):
            ec2.delete_key_pair(KeyName=name)
        done.key_pairs.append(name)
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
    # Never deleted: dlcloud's root disks go with their instance, so one still here was kept
    # on purpose (DeleteOnTermination=false). Listed, with what it costs, for the user.
    volumes: list[str] = field(default_factory=list)
    security_groups: set[str] = field(default_factory=set)
    key_pairs: set[str] = field(default_factory=set)

    def empty(self) -> bool:
        return not (self.expired or self.security_groups or self.key_pairs)

    def lines(self) -> list[str]:
        lines = [
            f"expired instance {i['InstanceId']} ({guard.tags_of(i).get(guard.TAG_NAME, '?')}, "
            f"expired {guard.tags_of(i).get(guard.TAG_EXPIRES)})"
            for i in self.expired
        ]
        lines += [f"unused security group {g}" for g in sorted(self.security_groups)]
        lines += [f"unused key pair {k}" for k in sorted(self.key_pairs)]
        return lines


def find_leftovers(ec2: Any, now: datetime, owner: str) -> ReapPlan:
    """The caller's expired instances and unused groups and keys; their kept disks, to list."""
    plan = ReapPlan()
    for instance in owned_instances(ec2, owner, LIVE_STATES):
        expires = parse_time(guard.tags_of(instance).get(guard.TAG_EXPIRES))
        if expires is not None and expires <= now:
            plan.expired.append(instance)
    with aws_errors("listing volumes"):
        volumes = ec2.describe_volumes(
            Filters=[*guard.owned_filters(owner), {"Name": "status", "Values": ["available"]}]
        )["Volumes"]
    plan.volumes = [
        f"{v['VolumeId']} ({v['Size']} GiB, {guard.tags_of(v).get(guard.TAG_NAME, '?')})"
        for v in volumes
    ]
    expired = {i["InstanceId"] for i in plan.expired}
    survivors = [i for i in region_instances(ec2, IN_USE_STATES) if i["InstanceId"] not in expired]
    used_groups = {g["GroupId"] for i in survivors for g in i.get("SecurityGroups", [])}
    used_keys = {i.get("KeyName") for i in survivors}
    created = guard.owned_filters(owner)
    with aws_errors("listing security groups and key pairs"):
        groups = ec2.describe_security_groups(Filters=created)["SecurityGroups"]
        keys = ec2.describe_key_pairs(Filters=created)["KeyPairs"]
    fresh = [r for r in [*groups, *keys] if guard.recently_used(r, now)]
    plan.security_groups = {g["GroupId"] for g in groups if g not in fresh} - used_groups
    plan.key_pairs = {k["KeyName"] for k in keys if k not in fresh} - used_keys
    return plan


def reap(ec2: Any, plan: ReapPlan, scope: Scope, now: datetime | None = None) -> Cleanup:
    """Expired instances, then unused groups and keys; volumes are only reported."""
    done = terminate(ec2, plan.expired, scope, now)
    remove_unused(ec2, plan.security_groups, plan.key_pairs, scope, done, now=now)
    done.kept += kept_volumes(plan)
    return done


def kept_volumes(plan: ReapPlan) -> list[str]:
    return [
        f"volume {v}: reap never deletes a disk (it bills until you run "
        f"`aws ec2 delete-volume --volume-id {v.split()[0]}`)"
        for v in plan.volumes
    ]
