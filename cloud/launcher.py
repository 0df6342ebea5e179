"""Preflight and launch: check before anything bills, launch once, clean up if interrupted."""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from bench.facts import platforms
from bench.facts.catalog import Catalog, CatalogError, Price
from cloud import ami, guard
from cloud.aws import Aws, CloudError, aws_errors, error_code, explain

SSH_USER = "ubuntu"  # the Deep Learning AMIs on Ubuntu log in as ubuntu
JUPYTER_PORT = 8888
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
# Waiters poll every 10 s for up to 15 minutes: GPU instances can take a while to pass checks.
WAITER_CONFIG = {"Delay": 10, "MaxAttempts": 90}
SECURITY_GROUP = "dlstation-ssh"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class LaunchRequest:
    """What the user asked for on the command line."""

    instance_type: str
    name: str
    ttl_text: str = "4h"
    spot: bool = False
    ami_type: str = ami.DEFAULT_AMI_TYPE
    ami_id: str | None = None
    key_name: str | None = None
    ssh_cidr: str | None = None
    volume_gb: int = 100
    idle_stop: str = "30m"


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

    def cost_for_ttl(self) -> float | None:
        hourly = self.price.usd_per_hour
        return None if hourly is None else hourly * self.ttl.total_seconds() / 3600

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
            f"  disk       {r.volume_gb} GiB gp3, encrypted, deleted with the instance",
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
            f"  for TTL    {'unknown' if total is None else f'${total:.2f}'} at most",
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
    ) -> None:
        self.aws = aws
        self.ec2 = aws.client("ec2")
        self.catalog = catalog
        self.now = now
        self.checkip = checkip
        self.key_folder = key_folder or guard.key_dir()
        self.waiter_config = waiter_config or WAITER_CONFIG
        self.say = say

    def ensure(self, request: LaunchRequest) -> dict[str, Any]:
        """The live instance of that name, launched (checked first, no question) if missing."""
        existing = self.find_existing(guard.check_name(request.name))
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
        ttl = guard.parse_ttl(request.ttl_text)
        idle = guard.parse_idle(request.idle_stop)
        with aws_errors("checking your AWS credentials"):
            owner = str(self.aws.client("sts").get_caller_identity()["Arn"])
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
                Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
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

    @staticmethod
    def name_filters(name: str) -> list[dict[str, Any]]:
        return [*guard.project_filter(), {"Name": f"tag:{guard.TAG_NAME}", "Values": [name]}]

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
        """run_instances with DryRun: AWS says whether we may, without launching."""
        try:
            self.ec2.run_instances(
                DryRun=True,
                ImageId=plan.ami_id,
                InstanceType=plan.request.instance_type,
                MinCount=1,
                MaxCount=1,
            )
        except ClientError as error:
            if error_code(error) != "DryRunOperation":
                raise explain(error, "checking launch permission (dry run)") from error

    def access(self, plan: Plan) -> tuple[str, str, str]:
        """The key pair and SSH group the launch uses, created if missing: key, group id, VPC."""
        request = plan.request
        labels = guard.Labels(request.name, plan.owner, plan.expires_at, request.ttl_text)
        key_name, _ = guard.ensure_key_pair(
            self.ec2, request.key_name or f"dlstation-{plan.region}", labels, self.key_folder
        )
        cidr = guard.check_cidr(request.ssh_cidr or guard.caller_cidr(self.checkip))
        vpc = guard.default_vpc(self.ec2)
        group_id = guard.ensure_security_group(self.ec2, SECURITY_GROUP, vpc, cidr, labels)
        return key_name, group_id, vpc

    def launch(self, plan: Plan) -> dict[str, Any]:
        """Key, firewall, then run_instances zone by zone; waits until status checks pass.

        Launches of one name on this machine take turns, and each holds its turn until AWS
        lists its instance, so the next one finds it instead of starting a second; launches
        from other machines are settled by one_per_name.
        """
        name = plan.request.name
        with guard.folder_lock(self.key_folder, f".launch-{plan.region}-{name}.lock"):
            existing = self.find_existing(name)
            if existing is not None:
                self.say(
                    f"{name!r} was launched meanwhile ({existing['InstanceId']}); "
                    "not starting a second one"
                )
                return self.follow(name)
            own = self.start(plan)
            with aws_errors("waiting for AWS to list the instance"):
                self.ec2.get_waiter("instance_exists").wait(
                    Filters=[*self.name_filters(name), {"Name": "instance-id", "Values": [own]}],
                    WaiterConfig={"Delay": 1, "MaxAttempts": 60},
                )
        return self.one_per_name(name, own)

    def start(self, plan: Plan) -> str:
        """Key, firewall and run_instances, zone by zone until one has capacity: the id."""
        request = plan.request
        labels = guard.Labels(request.name, plan.owner, plan.expires_at, request.ttl_text)
        key_name, group_id, vpc = self.access(plan)
        tags = guard.tag_list(
            {
                **labels.instance(request.ami_type, key_name, group_id),
                **self.billing_tags(plan),
            }
        )
        subnets = self.default_subnets(vpc)
        for zone in plan.zones:
            try:
                instance = self.run_in_zone(
                    plan,
                    zone=zone,
                    subnet=subnets.get(zone),
                    key_name=key_name,
                    group_id=group_id,
                    tags=tags,
                )
            except ClientError as error:
                if error_code(error) != "InsufficientInstanceCapacity":
                    raise explain(error, "launching the instance") from error
                continue
            return str(instance["InstanceId"])
        raise CloudError(
            f"no capacity for {request.instance_type} in any zone of {plan.region} "
            f"({', '.join(plan.zones)}); try later, --spot, another type or region"
        )

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
        except (KeyboardInterrupt, CloudError):
            # Ctrl-C or a failure meanwhile: what this launch started must not keep billing.
            self.ec2.terminate_instances(InstanceIds=[own])
            raise

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

    def run_in_zone(
        self,
        plan: Plan,
        *,
        zone: str,
        subnet: str | None,
        key_name: str,
        group_id: str,
        tags: list[dict[str, str]],
    ) -> dict[str, Any]:
        request = plan.request
        arguments: dict[str, Any] = {
            "ImageId": plan.ami_id,
            "InstanceType": request.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "KeyName": key_name,
            "SecurityGroupIds": [group_id],
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
            # One token per attempt: a retried call cannot start a second instance.
            "ClientToken": f"{request.name}-{uuid.uuid4().hex[:20]}",
        }
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
        instance: dict[str, Any] = self.ec2.run_instances(**arguments)["Instances"][0]
        return instance

    def wait_until_ready(self, instance_id: str) -> dict[str, Any]:
        """Running, then status checks ok."""
        with aws_errors("waiting for the instance"):
            for waiter in ("instance_running", "instance_status_ok"):
                self.ec2.get_waiter(waiter).wait(
                    InstanceIds=[instance_id], WaiterConfig=self.waiter_config
                )
        with aws_errors("describing the instance"):
            described = self.ec2.describe_instances(InstanceIds=[instance_id])
        instance: dict[str, Any] = described["Reservations"][0]["Instances"][0]
        return instance


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
