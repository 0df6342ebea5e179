"""Preflight and launch: check before anything bills, launch once, clean up if interrupted."""

from __future__ import annotations

import hashlib
import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from bench.exitcodes import USAGE
from bench.facts import platforms
from bench.facts.catalog import Catalog, CatalogError, Price
from cloud import ami, guard, interrupts
from cloud.aws import (
    AWS_FAILURES,
    LIVE_STATES,
    UP_STATES,
    Aws,
    CloudError,
    aws_errors,
    error_code,
    explain,
)
from cloud.options import LaunchRequest

__all__ = ["LaunchRequest", "Launcher", "Plan"]

SSH_USER = "ubuntu"  # the Deep Learning AMIs on Ubuntu log in as ubuntu
JUPYTER_PORT = 8888
# Waiters poll every 10 s for up to 15 minutes: GPU instances can take a while to pass checks.
WAITER_CONFIG = {"Delay": 10, "MaxAttempts": 90}
ENDED_STATES = ("shutting-down", "terminated")
MAX_GENERATIONS = 20  # tokens walked past ended launches of a name before giving up


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Plan:
    """The checked launch: where, what, for how long and at what price."""

    request: LaunchRequest
    region: str
    owner: str
    ami_id: str
    ami_source: str
    root_device: str
    zones: list[str]
    price: Price
    ttl: timedelta
    expires_at: datetime
    quota: str
    idle: timedelta | None = None
    warnings: list[str] = field(default_factory=list)
    ssh_cidr: str = ""  # who may SSH in: --ssh-cidr, else the caller's address
    disk_usd_per_hour: float | None = None

    def cost_for_ttl(self) -> float | None:
        """The most the TTL can cost: the instance and its root disk, for the whole TTL."""
        hourly = self.price.usd_per_hour
        if hourly is None or self.disk_usd_per_hour is None:
            return None
        return (hourly + self.disk_usd_per_hour) * self.ttl.total_seconds() / 3600

    def lines(self) -> list[str]:
        r = self.request
        hourly = self.price.usd_per_hour
        price = "unknown" if hourly is None else f"${hourly:.4f}/h"
        total = self.cost_for_ttl()
        software = (
            platforms.describe_host(r.ami_type)
            if r.ami_id is None
            else "an --ami-id image: setup.yml picks the versions by its Python"
        )
        lines = [
            f"launch plan for {r.name!r} in {self.region}",
            f"  instance   {r.instance_type} ({'spot' if r.spot else 'on-demand'}), "
            f"zones {', '.join(self.zones)}",
            f"  image      {self.ami_id} ({self.ami_source})",
            f"  software   {software}",
            f"  disk       {r.volume_gb} GiB gp3, encrypted, deleted with the instance"
            + ("" if self.disk_usd_per_hour is None else f", ${self.disk_usd_per_hour:.4f}/h"),
            f"  ssh from   {self.ssh_cidr} only",
            f"  lifetime   {r.ttl_text}: powers off and terminates at "
            f"{self.expires_at:%Y-%m-%d %H:%M} UTC, even if this machine is gone",
            "  idle stop  "
            + (
                "off: only the TTL stops it"
                if self.idle is None
                else f"{r.idle_stop}: powers off (and terminates) after {r.idle_stop} with no "
                "GPU process, SSH session, Ansible or bench run, Jupyter kernel activity, "
                "CPU use or keep-alive"
            ),
            f"  price      {price} ({self.price.basis}; catalog {self.price.as_of})",
            f"  for TTL    {'unknown' if total is None else f'${total:.2f}'} at most "
            "(instance and disk)",
            f"  quota      {self.quota}",
        ]
        lines += [f"  warning    {w}" for w in self.warnings]
        return lines


class Launcher:
    """Preflight, idempotent launch and Ctrl-C cleanup for one region."""

    def __init__(
        self,
        aws: Aws,
        catalog: Catalog,
        *,
        now: Callable[[], datetime] = utc_now,
        checkip: Callable[[], str] | None = None,
        key_folder: Path | None = None,
        waiter_config: dict[str, int] | None = None,
        say: Callable[[str], None] = print,
        stopping: threading.Event | None = None,
    ) -> None:
        self.aws = aws
        self.ec2 = aws.client("ec2")
        self.catalog = catalog
        self.now = now
        self.checkip = checkip
        self.key_folder = key_folder or guard.key_dir()
        self.waiter_config = waiter_config or WAITER_CONFIG
        self.say = say
        # Set when the command stops: every wait of this launcher ends within one poll.
        self.stopping = stopping or threading.Event()
        self.abandoned: list[str] = []  # "i-... (name)" of launches stopped and terminated

    @property
    def owner(self) -> str:
        """The caller's identity: the owner tag of everything this launcher creates."""
        return self.aws.caller()

    def ensure(self, request: LaunchRequest) -> dict[str, Any]:
        """The live instance of that name, launched (checked first, no question) if missing."""
        self.refuse_foreign(guard.check_name(request.name), request.campaign)
        existing = self.find_existing(request.name)
        if existing is not None:
            return existing
        return self.launch(self.preflight(request))

    # -- preflight -------------------------------------------------------------------------

    def preflight(self, request: LaunchRequest) -> Plan:
        """Every check that can fail before money is spent, each with a fix in its message."""
        try:
            self.catalog.get(request.instance_type)
        except CatalogError as error:
            raise CloudError(str(error), 2) from None
        guard.check_name(request.name)
        request.check()
        ttl = guard.parse_ttl(request.ttl_text)
        idle = guard.parse_idle(request.idle_stop)
        owner = self.owner
        # Everything access() will create or change is checked here, read-only, first.
        cidr = guard.check_cidr(
            request.ssh_cidr or guard.caller_cidr(self.checkip), request.allow_wide_cidr
        )
        guard.check_key_pair(self.ec2, self.key_name(request), self.key_folder)
        guard.check_group(
            guard.find_group(self.ec2, self.group_name(request), guard.default_vpc(self.ec2)),
            owner,
        )
        self.refuse_foreign(request.name, request.campaign)
        zones = self.offered_zones(request.instance_type)
        warnings: list[str] = []
        quota = self.check_quota(request, warnings)
        ami_id, ami_source, root_device = self.image(request)
        price = self.catalog.price(request.instance_type, self.aws.region, request.spot)
        if price.usd_per_hour is None:
            warnings.append(
                f"no price for {request.instance_type} in {self.aws.region}: "
                "cost figures are unknown (`dlcloud prices --refresh`)"
            )
        return Plan(
            request=request,
            region=self.aws.region,
            owner=owner,
            ami_id=ami_id,
            ami_source=ami_source,
            root_device=root_device,
            zones=zones,
            price=price,
            ttl=ttl,
            expires_at=guard.expiry(self.now(), ttl),
            quota=quota,
            idle=idle,
            warnings=warnings,
            ssh_cidr=cidr,
            disk_usd_per_hour=self.catalog.disk_per_hour(request.volume_gb, self.aws.region),
        )

    def key_name(self, request: LaunchRequest) -> str:
        return request.key_name or f"dlstation-{self.aws.region}"

    def group_name(self, request: LaunchRequest) -> str:
        return guard.ssh_group_name(request.campaign or request.name, self.owner)

    def refuse_foreign(self, name: str, campaign: str | None) -> None:
        """A campaign uses only its own instances, a plain launch only a plain launch's."""
        for instance in self.live_named(name):
            theirs = guard.tags_of(instance).get(guard.TAG_CAMPAIGN)
            if theirs == campaign:
                continue
            started = f"campaign {theirs!r}" if theirs else "`dlcloud launch`"
            raise CloudError(
                f"{name!r} is taken by {instance['InstanceId']}, which {started} started; "
                "it is left alone: pick another --name, or terminate that instance first",
                USAGE,
            )

    def offered_zones(self, instance_type: str) -> list[str]:
        with aws_errors("looking up where the instance type is offered"):
            offerings = self.ec2.describe_instance_type_offerings(
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": [instance_type]}],
            )["InstanceTypeOfferings"]
        zones = sorted(o["Location"] for o in offerings)
        if not zones:
            raise CloudError(
                f"{instance_type} is not offered in {self.aws.region}; try another --region "
                "(`dlcloud offers` lists types)"
            )
        return zones

    def check_quota(self, request: LaunchRequest, warnings: list[str]) -> str:
        """Refuse when the vCPU quota cannot hold the instance; an unreadable quota is a warning."""
        kind = self.catalog.get(request.instance_type)
        code = self.catalog.quota_code(request.instance_type, request.spot)
        market = "spot" if request.spot else "on-demand"
        try:
            quota = self.aws.client("service-quotas").get_service_quota(
                ServiceCode="ec2", QuotaCode=code
            )["Quota"]["Value"]
        except ClientError as error:
            warnings.append(
                f"could not read the {market} {kind.quota_class} vCPU quota {code} "
                f"({error_code(error)}); if the launch fails with VcpuLimitExceeded, request more"
            )
            return "unknown"
        used = self.vcpus_in_use(kind.quota_class)
        if used + kind.vcpus > quota:
            raise CloudError(
                f"{request.instance_type} needs {kind.vcpus} vCPUs but your {market} "
                f"{kind.quota_class}-instance quota ({code}) is {quota:g} with {used} in use\n"
                f"  what to do: request an increase of {code} in Service Quotas (EC2), "
                "or pick a smaller type",
                2,
            )
        return f"{quota:g} vCPUs ({code}), {used} in use, {kind.vcpus} needed"

    def vcpus_in_use(self, quota_class: str) -> int:
        letters = ("p",) if quota_class == "P" else ("g", "vt")
        used = 0
        with aws_errors("counting running instances"):
            pages = self.ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-state-name", "Values": UP_STATES}]
            )
            for page in pages:
                for reservation in page["Reservations"]:
                    for instance in reservation["Instances"]:
                        if instance["InstanceType"].startswith(letters):
                            used += self.vcpus_of(instance)
        return used

    def vcpus_of(self, instance: dict[str, Any]) -> int:
        """Quotas count a type's nominal vCPUs: the catalog's, else what CpuOptions says."""
        known = self.catalog.types.get(instance["InstanceType"])
        if known is not None:
            return known.vcpus
        cpu = instance.get("CpuOptions", {})
        return int(cpu.get("CoreCount", 0) * cpu.get("ThreadsPerCore", 1))

    def image(self, request: LaunchRequest) -> tuple[str, str, str]:
        if request.ami_id:
            ami_id, source = request.ami_id, "--ami-id"
        else:
            ami_id, source = ami.resolve(self.aws.client("ssm"), self.ec2, request.ami_type)
        with aws_errors(f"looking up image {ami_id}"):
            images = self.ec2.describe_images(ImageIds=[ami_id])["Images"]
        if not images:
            raise CloudError(f"image {ami_id} not found in {self.aws.region}; check --ami-id", 2)
        return ami_id, source, images[0].get("RootDeviceName", "/dev/sda1")

    # -- launch ----------------------------------------------------------------------------

    def find_existing(self, name: str) -> dict[str, Any] | None:
        """The live instance of this project with this name (the oldest, should there be more)."""
        instances = self.live_named(name)
        return min(instances, key=age_order) if instances else None

    def live_named(self, name: str) -> list[dict[str, Any]]:
        with aws_errors("looking for instances of that name"):
            reservations = self.ec2.describe_instances(
                Filters=[
                    *self.name_filters(name),
                    {"Name": "instance-state-name", "Values": LIVE_STATES},
                ]
            )["Reservations"]
        return [i for r in reservations for i in r["Instances"]]

    def name_filters(self, name: str) -> list[dict[str, Any]]:
        """The caller's own dlcloud instances of that name: nobody else's, nothing by hand."""
        return [
            *guard.owned_filters(self.owner),
            {"Name": f"tag:{guard.TAG_NAME}", "Values": [name]},
        ]

    def follow(self, name: str) -> dict[str, Any]:
        """Wait for the instance of that name another launch started; the survivor if two did."""
        first = self.find_existing(name)
        if first is None:
            raise CloudError(
                f"the instance {name!r} that another launch started is gone; launch again"
            )
        ready = self.wait_until_ready(first["InstanceId"])
        now = self.find_existing(name)
        if now is not None and now["InstanceId"] != first["InstanceId"]:
            return self.wait_until_ready(now["InstanceId"])
        return ready

    def check_permissions(self, plan: Plan) -> None:
        """The launch's own run_instances request with DryRun: AWS judges every parameter.

        A key pair or SSH group the launch would create cannot be named before it exists;
        the request names them when they already do, and carries everything else.
        """
        request = plan.request
        key_name = self.key_name(request)
        key = guard.find_key_pair(self.ec2, key_name)
        vpc = guard.default_vpc(self.ec2)
        group = guard.find_group(self.ec2, self.group_name(request), vpc)
        zone = plan.zones[0]
        arguments = self.run_arguments(
            plan,
            zone=zone,
            subnet=self.default_subnets(vpc).get(zone),
            key_name=key_name if key is not None else None,
            group_id=str(group["GroupId"]) if group is not None else None,
            tags=self.instance_tags(plan, key_name, group["GroupId"] if group else "(new)"),
            token=launch_token(plan.owner, plan.region, request.name, 0, zone),
        )
        try:
            self.ec2.run_instances(DryRun=True, **arguments)
        except ClientError as error:
            if error_code(error) != "DryRunOperation":
                raise explain(error, "checking the launch (dry run)") from error

    def access(self, plan: Plan) -> tuple[str, str, str]:
        """The key pair and SSH group the launch uses, created if missing: key, group id, VPC."""
        request = plan.request
        labels = self.labels(plan)
        key_name, _ = guard.ensure_key_pair(
            self.ec2, self.key_name(request), labels, self.key_folder
        )
        vpc = guard.default_vpc(self.ec2)
        group_id = guard.ensure_security_group(
            self.ec2, self.group_name(request), vpc, plan.ssh_cidr, labels
        )
        pair = guard.find_key_pair(self.ec2, key_name)
        claimed = [group_id] + ([pair["KeyPairId"]] if pair and pair.get("KeyPairId") else [])
        guard.claim(self.ec2, claimed, self.now())
        return key_name, group_id, vpc

    @staticmethod
    def labels(plan: Plan) -> guard.Labels:
        r = plan.request
        return guard.Labels(r.name, plan.owner, plan.expires_at, r.ttl_text, r.campaign)

    def instance_tags(self, plan: Plan, key_name: str, group_id: str) -> list[dict[str, str]]:
        instance = self.labels(plan).instance(plan.request.ami_type, key_name, group_id)
        return guard.tag_list({**instance, **self.billing_tags(plan)})

    def launch(self, plan: Plan) -> dict[str, Any]:
        """Key, firewall, then run_instances zone by zone; waits until status checks pass.

        Launches of one name on this machine take turns, and each holds its turn until AWS
        lists its instance, so the next one finds it instead of starting a second. Launches
        from other machines send the same client token (launch_token), so AWS starts one
        instance for all of them. Stopped at any point, it terminates what it started.
        """
        name = plan.request.name
        with guard.folder_lock(
            self.key_folder,
            f".launch-{plan.region}-{name}.lock",
            f"another dlcloud launching {name!r} in {plan.region} to finish",
        ):
            existing = self.find_existing(name)
            if existing is not None:
                self.say(
                    f"{name!r} was launched meanwhile ({existing['InstanceId']}); "
                    "not starting a second one"
                )
                return self.follow(name)
            tokens: list[str] = []
            try:
                with guard.resource_lock(self.key_folder, exclusive=False, say=self.say):
                    own, ours = self.start(plan, tokens)
                    self.wait_listed(name, own)
            except BaseException as error:
                self.abandon(tokens, error)
                raise
        if not ours:
            self.say(
                f"another dlcloud launched {name!r} ({own}) with the same token; "
                "not starting a second one"
            )
            return self.wait_until_ready(own)
        return self.one_per_name(name, own)

    def wait_listed(self, name: str, instance_id: str) -> None:
        self.wait(
            "instance_exists",
            {"Delay": 1, "MaxAttempts": 60},
            "waiting for AWS to list the instance",
            Filters=[*self.name_filters(name), {"Name": "instance-id", "Values": [instance_id]}],
        )

    def abandon(self, tokens: list[str], error: BaseException) -> None:
        """Terminate whatever a stopped or failed launch started, found by its tokens."""
        if not tokens:
            if isinstance(error, interrupts.Interrupted):
                error.cleaned = True
            return
        with interrupts.deferred():
            with aws_errors("looking for the instance this launch started"):
                reservations = self.ec2.describe_instances(
                    Filters=[
                        {"Name": f"tag:{guard.TAG_TOKEN}", "Values": tokens},
                        {"Name": "instance-state-name", "Values": LIVE_STATES},
                    ]
                )["Reservations"]
            started = [i for r in reservations for i in r["Instances"]]
            if started:
                with aws_errors("terminating the instance this launch started"):
                    self.ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in started])
            ended = [
                f"{i['InstanceId']} ({guard.tags_of(i).get(guard.TAG_NAME, '?')})" for i in started
            ]
            self.abandoned += ended
            if isinstance(error, interrupts.Interrupted):
                error.cleaned = True
                error.terminated += ended

    def start(self, plan: Plan, tokens: list[str]) -> tuple[str, bool]:
        """Key, firewall and run_instances, zone by zone until one has capacity.

        Returns the instance id and whether this launch started it (False: another dlcloud
        sent the same token first). Each token tried is appended to `tokens` before it is sent.
        """
        request = plan.request
        key_name, group_id, vpc = self.access(plan)
        base = {
            **self.labels(plan).instance(request.ami_type, key_name, group_id),
            **self.billing_tags(plan),
        }
        subnets = self.default_subnets(vpc)
        generation = self.generation(plan)
        for _ in range(MAX_GENERATIONS):
            for zone in plan.zones:
                token = launch_token(plan.owner, plan.region, request.name, generation, zone)
                tokens.append(token)
                try:
                    arguments = self.run_arguments(
                        plan,
                        zone=zone,
                        subnet=subnets.get(zone),
                        key_name=key_name,
                        group_id=group_id,
                        tags=guard.tag_list({**base, guard.TAG_TOKEN: token}),
                        token=token,
                    )
                    instance = self.ec2.run_instances(**arguments)["Instances"][0]
                except ClientError as error:
                    code = error_code(error)
                    if code == "IdempotentParameterMismatch":
                        other = self.launched_with(token)
                        if other is None:
                            break  # that token's launch has ended: the next generation
                        return other, False
                    if code != "InsufficientInstanceCapacity":
                        raise explain(error, "launching the instance") from error
                    continue
                if instance["State"]["Name"] in ENDED_STATES:
                    break  # AWS answered with the ended launch this token started before
                return str(instance["InstanceId"]), True
            else:
                raise CloudError(
                    f"no capacity for {request.instance_type} in any zone of {plan.region} "
                    f"({', '.join(plan.zones)}); try later, --spot, another type or region"
                )
            generation += 1
        raise CloudError(
            f"{MAX_GENERATIONS} launches of {request.name!r} ended meanwhile; launch it again"
        )

    def generation(self, plan: Plan) -> int:
        """The first token generation not spent on an ended launch, as far as AWS lists them.

        Every machine computes it from the same listing; one that sees less of it only tries
        a spent token first, which AWS answers without starting anything.
        """
        prefix = launch_token(plan.owner, plan.region, plan.request.name, 0, "").rsplit("-", 2)[0]
        with aws_errors("looking for earlier launches of that name"):
            reservations = self.ec2.describe_instances(Filters=self.name_filters(plan.request.name))
        spent: dict[int, bool] = {}
        for instance in (i for r in reservations["Reservations"] for i in r["Instances"]):
            token = guard.tags_of(instance).get(guard.TAG_TOKEN, "")
            if not token.startswith(prefix + "-"):
                continue
            try:
                number = int(token[len(prefix) + 1 :].split("-", 1)[0])
            except ValueError:
                continue
            ended = instance["State"]["Name"] in ENDED_STATES
            spent[number] = spent.get(number, True) and ended
        if not spent:
            return 0
        top = max(spent)
        return top + 1 if spent[top] else top

    def launched_with(self, token: str) -> str | None:
        """The live instance another launch started with this token (once AWS lists it)."""
        filters = [{"Name": f"tag:{guard.TAG_TOKEN}", "Values": [token]}]
        try:
            self.wait("instance_exists", {"Delay": 1, "MaxAttempts": 30}, "", Filters=filters)
        except CloudError:
            return None
        with aws_errors("looking up the instance of that token"):
            reservations = self.ec2.describe_instances(Filters=filters)["Reservations"]
        live = [
            i
            for r in reservations
            for i in r["Instances"]
            if i["State"]["Name"] not in ENDED_STATES
        ]
        return str(live[0]["InstanceId"]) if live else None

    @staticmethod
    def billing_tags(plan: Plan) -> dict[str, str]:
        """The idle setting and the hourly price planned with, for `list` and the final bill."""
        tags = {guard.TAG_IDLE: "off" if plan.idle is None else plan.request.idle_stop}
        if plan.price.usd_per_hour is not None:
            market = "spot" if plan.request.spot else "on-demand"
            tags[guard.TAG_PRICE] = f"{plan.price.usd_per_hour:.4f}"
            tags[guard.TAG_PRICE_BASIS] = (
                f"{market}, {plan.price.basis}, catalog {plan.price.as_of}"
            )[:256]
        return tags

    def one_per_name(self, name: str, own: str) -> dict[str, Any]:
        """Wait for our instance, keeping only the oldest of any launched under the same name.

        Concurrent launches all see the same oldest one (launch time, then id) and the others
        terminate themselves; checking again once ready covers a listing that lagged behind.
        """
        try:
            winner = self.keep_oldest(name, own)
            if winner != own:
                return self.wait_until_ready(winner)
            ready = self.wait_until_ready(own)
            winner = self.keep_oldest(name, own)
            return ready if winner == own else self.wait_until_ready(winner)
        except (KeyboardInterrupt, CloudError) as error:
            # A signal or a failure meanwhile: what this launch started must not keep billing.
            self.discard(own, name, error)
            raise

    def discard(self, instance_id: str, name: str, error: BaseException) -> None:
        """Terminate an instance this launch started, and say so in the interrupt's summary."""
        with interrupts.deferred(), aws_errors("terminating the instance this launch started"):
            self.ec2.terminate_instances(InstanceIds=[instance_id])
        self.abandoned.append(f"{instance_id} ({name})")
        if isinstance(error, interrupts.Interrupted):
            error.cleaned = True
            error.terminated.append(f"{instance_id} ({name})")

    def keep_oldest(self, name: str, own: str) -> str:
        found = {i["InstanceId"]: i for i in self.live_named(name)}
        if own not in found:
            return own  # our own launch is not listed yet: nothing to compare it with
        winner = min(found.values(), key=age_order)["InstanceId"]
        if winner != own:
            with aws_errors("terminating the duplicate"):
                self.ec2.terminate_instances(InstanceIds=[own])
            self.say(
                f"another launch of {name!r} ran at the same time and started {winner} first; "
                f"terminated this one ({own}) so that one instance remains"
            )
        return winner

    def default_subnets(self, vpc: str) -> dict[str, str]:
        with aws_errors("looking up subnets"):
            subnets = self.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])
        return {s["AvailabilityZone"]: s["SubnetId"] for s in subnets["Subnets"]}

    @staticmethod
    def run_arguments(
        plan: Plan,
        *,
        zone: str,
        subnet: str | None,
        key_name: str | None,
        group_id: str | None,
        tags: list[dict[str, str]],
        token: str,
    ) -> dict[str, Any]:
        """The run_instances request of one zone: the launch and its dry run send this."""
        request = plan.request
        arguments: dict[str, Any] = {
            "ImageId": plan.ami_id,
            "InstanceType": request.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "InstanceInitiatedShutdownBehavior": "terminate",
            "UserData": guard.watchdog_user_data(plan.expires_at, plan.idle),
            "BlockDeviceMappings": [
                {
                    "DeviceName": plan.root_device,
                    "Ebs": {
                        "VolumeSize": request.volume_gb,
                        "VolumeType": "gp3",
                        "Encrypted": True,
                        "DeleteOnTermination": True,
                    },
                }
            ],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
            # The same for every launch of this name and generation, on any machine: AWS starts
            # one instance for all of them, and a retried call cannot start a second.
            "ClientToken": token,
        }
        if key_name is not None:
            arguments["KeyName"] = key_name
        if group_id is not None:
            arguments["SecurityGroupIds"] = [group_id]
        if subnet:
            arguments["SubnetId"] = subnet
        else:
            arguments["Placement"] = {"AvailabilityZone": zone}
        if request.spot:
            arguments["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        return arguments

    def wait_until_ready(self, instance_id: str) -> dict[str, Any]:
        """Running, then status checks ok."""
        for waiter in ("instance_running", "instance_status_ok"):
            self.wait(
                waiter, self.waiter_config, "waiting for the instance", InstanceIds=[instance_id]
            )
        with aws_errors("describing the instance"):
            described = self.ec2.describe_instances(InstanceIds=[instance_id])
        instance: dict[str, Any] = described["Reservations"][0]["Instances"][0]
        return instance

    def wait(self, name: str, config: dict[str, int], action: str, **params: Any) -> None:
        """A boto3 waiter polled one attempt at a time, so that `stopping` ends it at once."""
        waiter = self.ec2.get_waiter(name)
        attempts = config.get("MaxAttempts", 1)
        for attempt in range(1, attempts + 1):
            try:
                waiter.wait(**params, WaiterConfig={"Delay": 0, "MaxAttempts": 1})
            except WaiterError as error:
                if "Max attempts exceeded" not in str(error) or attempt == attempts:
                    raise explain(error, action or f"waiting ({name})") from error
            except AWS_FAILURES as error:
                raise explain(error, action or f"waiting ({name})") from error
            else:
                return
            if self.stopping.wait(config.get("Delay", 1)):
                raise CloudError(f"stopped while {action or 'waiting'}")


def launch_token(owner: str, region: str, name: str, generation: int, zone: str) -> str:
    """RunInstances' client token: one per caller, region, name, generation and zone."""
    digest = hashlib.sha256(f"{owner}\n{region}\n{name}".encode()).hexdigest()[:24]
    return f"dlcloud-{digest}-{generation}-{zone}"[:64]


def age_order(instance: dict[str, Any]) -> tuple[Any, str]:
    """Oldest first (launch time, then id): every launch of a name agrees on the survivor."""
    return instance["LaunchTime"], instance["InstanceId"]


def ssh_argv(instance: dict[str, Any], key_path: Path) -> list[str]:
    host = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress", "?")
    return ["ssh", "-i", str(key_path), f"{SSH_USER}@{host}"]


def ssh_command(instance: dict[str, Any], key_path: Path) -> str:
    """The ssh command, quoted so that pasting it runs exactly that."""
    return shlex.join(ssh_argv(instance, key_path))


def tunnel_command(instance: dict[str, Any], key_path: Path) -> str:
    host = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress", "?")
    forward = f"{JUPYTER_PORT}:127.0.0.1:{JUPYTER_PORT}"
    argv = ["ssh", "-i", str(key_path), "-N", "-L", forward, f"{SSH_USER}@{host}"]
    return f"{shlex.join(argv)}  # then open http://127.0.0.1:{JUPYTER_PORT}"
