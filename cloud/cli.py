"""dlcloud: rent an AWS Deep Learning AMI GPU instance, and make sure it stops billing."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.exitcodes import INTERNAL, USAGE
from bench.facts.catalog import Catalog, user_catalog_path
from bench.textfmt import table
from cloud import (
    campaign,
    campaign_options,
    fleet,
    guard,
    idle,
    interrupts,
    inventory,
    options,
    prices,
)
from cloud.aws import (
    AWS_FAILURES,
    LIVE_STATES,
    RUNNING,
    Aws,
    CloudError,
    aws_errors,
    check_region,
    explain,
)
from cloud.launcher import Launcher, ssh_argv, ssh_command, tunnel_command

Confirm = Callable[[str], bool]


def ask(prompt: str) -> bool:
    """Ask on the terminal; without one, the answer is no (scripts must pass --yes)."""
    if not sys.stdin.isatty():
        return False
    return input(f"{prompt} [y/N] ").strip().lower() in ("y", "yes")


def add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--region", default=default, help="AWS region (default: AWS_DEFAULT_REGION / profile)"
    )
    parser.add_argument("--profile", default=default, help="AWS profile (default: AWS_PROFILE)")


ANY_OWNER_HELP = (
    "also other owners' dlcloud instances in this account (each shown with its owner); "
    "by default only those dlcloud launched for your AWS identity"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlcloud",
        description="Launch AWS Deep Learning AMI GPU instances safely; leave nothing billing.",
    )
    add_global_options(parser, None)
    # The same options after the subcommand; SUPPRESS keeps a value given before it.
    shared = argparse.ArgumentParser(add_help=False)
    add_global_options(shared, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    original_add_parser = commands.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return original_add_parser(name, parents=[shared], **kwargs)

    commands.add_parser = add_parser  # type: ignore[method-assign]

    offers = commands.add_parser("offers", help="GPU instance types and their prices")
    offers.add_argument("--gpu", help="only GPUs whose name contains this, e.g. A10G, L4, H100")
    offers.add_argument(
        "--live",
        action="store_true",
        help="add the current spot price from AWS (needs credentials)",
    )

    prices = commands.add_parser("prices", help="show or refresh the price catalog")
    prices.add_argument(
        "--refresh",
        action="store_true",
        help="read on-demand prices (Pricing API) and week-long spot medians",
    )
    prices.add_argument(
        "--offer-file",
        action="store_true",
        help="with --refresh: on-demand prices from AWS's public price list (no credentials)",
    )
    prices.add_argument("--regions", nargs="+", help="regions to refresh (default: --region)")
    prices.add_argument(
        "--output",
        type=Path,
        help="where to write (default: $DLSTATION_CATALOG or ~/.config/dlstation/catalog.json)",
    )

    launch = commands.add_parser("launch", help="start a GPU instance with a TTL")
    launch.add_argument("--instance-type", required=True, help="e.g. g5.xlarge (see offers)")
    launch.add_argument(
        "--name",
        help="instance name; the same name reuses the instance (default: dlstation-<type>)",
    )
    options.add_machine_options(launch, ttl_default="4h")
    launch.add_argument(
        "--dry-run", action="store_true", help="preflight and print the plan; launch nothing"
    )
    launch.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    launch.add_argument("--inventory", type=Path, help="static inventory file to update")

    listing = commands.add_parser("list", help="your dlcloud instances, their TTL and cost")
    listing.add_argument("--regions", nargs="+", help="regions to list (default: --region)")
    listing.add_argument("--any-owner", action="store_true", help=ANY_OWNER_HELP)

    ssh = commands.add_parser("ssh", help="open an SSH session to an instance")
    ssh.add_argument("name")
    ssh.add_argument("--print", action="store_true", help="print the command instead")

    keepalive = commands.add_parser(
        "keepalive", help="keep an instance up for a while, whatever idle stop would decide"
    )
    keepalive.add_argument("name")
    keepalive.add_argument("duration", help="e.g. 90m, 2h, 1d; off to clear it")
    keepalive.add_argument("--print", action="store_true", help="print the command instead")

    stop = commands.add_parser("stop", help="stop an instance (its disk still bills)")
    stop.add_argument("name")

    terminate = commands.add_parser("terminate", help="terminate instances and clean up")
    target = terminate.add_mutually_exclusive_group(required=True)
    target.add_argument("name", nargs="?")
    target.add_argument("--all", action="store_true", help="every dlcloud instance of yours")
    terminate.add_argument("--any-owner", action="store_true", help=ANY_OWNER_HELP)
    terminate.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    terminate.add_argument("--inventory", type=Path, help="static inventory file to update")

    reap = commands.add_parser("reap", help="remove expired instances and orphaned resources")
    reap.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reap.add_argument("--inventory", type=Path, help="static inventory file to update")
    campaign_options.add_parser(commands)
    return parser


class Commands:
    """The subcommands, with their seams (AWS, clock, prompt, exec) injectable for tests."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        catalog: Catalog | None = None,
        now: Callable[[], datetime] | None = None,
        confirm: Confirm = ask,
        checkip: Callable[[], str] | None = None,
        execute: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.args = args
        self.catalog = catalog or Catalog.load()
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.confirm = confirm
        self.checkip = checkip
        self.execute = execute or (lambda argv: os.execvp(argv[0], argv))
        self._aws: Aws | None = None

    @property
    def aws(self) -> Aws:
        if self._aws is None:
            self._aws = Aws(self.args.region, self.args.profile)
        return self._aws

    def inventory_path(self) -> Path:
        return getattr(self.args, "inventory", None) or inventory.default_path()

    def owner(self) -> str | None:
        """Whose instances the command acts on: the caller's, or anyone's with --any-owner."""
        return None if getattr(self.args, "any_owner", False) else self.aws.caller()

    def scope(self) -> fleet.Scope:
        return fleet.Scope(self.aws.caller(), guard.key_dir(), self.inventory_path())

    def offers(self) -> int:
        region = check_region(
            self.args.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        live: dict[str, float] = {}
        note = ""
        if self.args.live:
            live, note = self.live_spot(region)
        rows = []
        for kind in self.catalog.offers(self.args.gpu):
            on_demand = self.catalog.on_demand(kind.instance_type, region).usd_per_hour
            spot = self.catalog.spot(kind.instance_type, region)
            spot_text = "-" if spot.usd_per_hour is None else f"{spot.usd_per_hour:.3f}"
            if spot.estimate and spot.usd_per_hour is not None:
                spot_text += "~"
            row = [
                kind.instance_type,
                f"{kind.gpu_count}x {kind.gpu}",
                f"{kind.gpu_memory_gib}",
                str(kind.vcpus),
                "-" if on_demand is None else f"{on_demand:.3f}",
                spot_text,
            ]
            if self.args.live:
                row.append(f"{live[kind.instance_type]:.3f}" if kind.instance_type in live else "-")
            rows.append(row)
        header = ["type", "GPUs", "GiB/GPU", "vCPUs", "on-demand $/h", "spot $/h"]
        if self.args.live:
            header.append("spot now $/h")
        if not rows:
            raise CloudError(f"no GPU type matches --gpu {self.args.gpu!r}", USAGE)
        print(table(header, rows))
        print(
            f"\n{region}, catalog of {self.catalog.as_of}. ~ = estimate "
            f"({self.catalog.spot_fraction:.0%} of on-demand). {note}".rstrip()
        )
        return 0

    def live_spot(self, region: str) -> tuple[dict[str, float], str]:
        """Newest spot price per type (lowest over zones), or why there is none."""
        try:
            ec2 = Aws(region, self.args.profile).client("ec2")
            with aws_errors("reading spot prices"):
                history = ec2.describe_spot_price_history(
                    InstanceTypes=list(self.catalog.types),
                    ProductDescriptions=["Linux/UNIX"],
                    StartTime=self.now(),
                )["SpotPriceHistory"]
        except CloudError as error:
            return {}, f"live spot prices unavailable: {error}"
        prices: dict[str, float] = {}
        for entry in history:
            value = float(entry["SpotPrice"])
            kind = entry["InstanceType"]
            prices[kind] = min(value, prices.get(kind, value))
        return prices, "spot now: describe_spot_price_history, lowest zone."

    def prices(self) -> int:
        if not self.args.refresh:
            print(f"catalog of {self.catalog.as_of}: {len(self.catalog.types)} GPU types")
            for name, source in self.catalog.sources.items():
                print(f"  {name}: {source}")
            for note in self.catalog.data.get("notes", []):
                print(f"  {note}")
            print("refresh: dlcloud prices --refresh --regions us-east-1 us-west-2")
            return 0
        regions = self.args.regions or [self.aws.region]
        if self.args.offer_file:
            try:
                data = prices.refresh_from_offer_files(self.catalog, regions, self.now())
            except prices.OfferFileError as error:
                raise CloudError(f"{error}; the catalog is unchanged", 1) from None
        else:
            data = prices.refresh(
                self.catalog, lambda region: Aws(region, self.args.profile), regions, self.now()
            )
        output = self.args.output or user_catalog_path()
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(data, indent=1) + "\n")
        print(f"catalog written to {output} (as of {data['as_of']})")
        return 0

    def admit_only(
        self, instance: dict[str, Any], name: str, cidr: str, launcher: Launcher
    ) -> None:
        """--ssh-cidr again for a launch that exists: its own SSH group admits that address
        only from now on (the user moved, say), and the change is said; a dry run only says."""
        group_id = guard.tags_of(instance).get(guard.TAG_GROUP, "")
        names = {g["GroupId"]: g["GroupName"] for g in instance.get("SecurityGroups", [])}
        if group_id not in names:
            print(f"{name!r} has no SSH group of dlcloud's; its SSH rules are unchanged")
            return
        # Shared, as a launch takes it: terminate and reap delete groups holding it alone.
        with guard.resource_lock(launcher.key_folder, exclusive=False, say=launcher.say):
            group = fleet.describe_group(launcher.ec2, group_id)
            if group is None:
                print(f"{name!r}: its SSH group {group_id} is gone; nothing was changed")
                return
            before = guard.ssh_cidrs(group)
            if before == {cidr} and not guard.port_22_sources(group) - {cidr}:
                return
            was = ", ".join(sorted(before)) or "none"
            if self.args.dry_run:
                print(f"dry run: {name!r} would admit SSH from {cidr} only (now: {was})")
                return
            labels = guard.Labels(name, launcher.owner, self.now(), "")
            guard.ensure_security_group(
                launcher.ec2, names[group_id], instance["VpcId"], cidr, labels
            )
            guard.claim(launcher.ec2, [group_id], self.now())
            after = fleet.describe_group(launcher.ec2, group_id)
        others = sorted(guard.port_22_sources(after or {}) - {cidr})
        if others:
            print(
                f"{name!r}: SSH now from {cidr} (was: {was}); rules dlcloud did not add still "
                f"let {', '.join(others)} reach port 22: remove them in the group {group_id}"
            )
            return
        print(f"{name!r}: SSH now from {cidr} only (was: {was})")

    def launch(self) -> int:
        args = self.args
        # Every value is checked before the first AWS call.
        name = options.checked_name(args.name, f"dlstation-{args.instance_type.replace('.', '-')}")
        request = options.machine_options(args).request(args.instance_type, name)
        inventory.check(self.inventory_path())
        launcher = Launcher(self.aws, self.catalog, now=self.now, checkip=self.checkip)
        launcher.refuse_foreign(request.name, None)
        existing = launcher.find_existing(request.name)
        if existing is not None:
            print(
                f"{request.name!r} already exists ({existing['InstanceId']}, "
                f"{existing['State']['Name']}); not starting a second one"
            )
            differs = [
                f"{option} {have} (asked: {asked})"
                for option, have, asked in (
                    ("--instance-type", existing.get("InstanceType"), request.instance_type),
                    ("--ami-id", existing.get("ImageId"), args.ami_id),
                )
                if asked is not None and have != asked
            ]
            if differs:
                print(
                    f"{request.name!r} runs with {', '.join(differs)}; to get the new one, "
                    f"terminate it first (dlcloud terminate {request.name})"
                )
            if args.ssh_cidr is not None:
                cidr = guard.check_cidr(args.ssh_cidr, args.allow_wide_cidr)
                self.admit_only(existing, request.name, cidr, launcher)
            if args.dry_run:
                print("dry run: nothing was changed")
                return 0
            self.report_ready(existing, request.name, launcher)
            return 0
        plan = launcher.preflight(request)
        print("\n".join(plan.lines()))
        if args.dry_run:
            launcher.check_permissions(plan)
            print("dry run: every check passed; nothing was launched")
            return 0
        if not args.yes and not self.confirm("launch it?"):
            print("not launched (pass --yes to skip this question)")
            return 1
        instance = launcher.launch(plan)
        try:
            self.record(instance, request.name, launcher)
        except BaseException as error:
            # Stopped or failed before the user was told how to reach it: it must not bill on.
            launcher.discard(instance["InstanceId"], request.name, error)
            if not isinstance(error, KeyboardInterrupt):
                print(
                    f"dlcloud: terminated {instance['InstanceId']} ({request.name})",
                    file=sys.stderr,
                )
            raise
        self.report_ready(instance, request.name, launcher, recorded=True)
        return 0

    @staticmethod
    def key_file(instance: dict[str, Any], launcher: Launcher) -> Path:
        key_name = instance.get("KeyName") or guard.tags_of(instance).get(guard.TAG_KEY, "")
        return launcher.key_folder / f"{key_name}.pem"

    def record(self, instance: dict[str, Any], name: str, launcher: Launcher) -> None:
        key_file = self.key_file(instance, launcher)
        path = self.inventory_path()
        moved = inventory.add_host(path, name, instance, self.aws.region, key_file)
        if moved is not None:
            print(f"{path}: the host {name!r} of another region is now {moved!r}")

    def report_ready(
        self, instance: dict[str, Any], name: str, launcher: Launcher, recorded: bool = False
    ) -> None:
        if not recorded:
            self.record(instance, name, launcher)
        key_file = self.key_file(instance, launcher)
        path = self.inventory_path()
        address = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress")
        print(f"\n{name}: {instance['InstanceId']} {instance['State']['Name']} at {address}")
        print(f"  ssh:      {ssh_command(instance, key_file)}")
        print(f"  jupyter:  {tunnel_command(instance, key_file)}")
        playbook = ["ansible-playbook", "-i", str(path), "setup.yml", "--limit", name]
        print(f"  ansible:  {shlex.join(playbook)}")
        done = ["dlcloud", "--region", self.aws.region, "terminate", name]
        print(f"  when done: {shlex.join(done)}")

    def list(self) -> int:
        regions = self.args.regions or [self.aws.region]
        now = self.now()
        rows = []
        notes = []
        owner = self.owner()
        for region in regions:
            ec2 = Aws(region, self.args.profile).client("ec2")
            for instance in fleet.owned_instances(ec2, owner):
                if not fleet.shown_in_list(instance):
                    continue
                row = fleet.describe(instance, region, self.catalog, now)
                ended = row["state"] == "interrupted"  # its end time is not in the listing
                if ended:
                    notes.append(f"{row['name']} ({row['id']}) was interrupted: {row['reason']}")
                rows.append(
                    [
                        row["name"],
                        row["id"],
                        region,
                        row["type"],
                        row["market"],
                        row["state"],
                        "-" if ended else f"{row['age_h']:.1f}h",
                        self.idle_cell(ec2, instance, row["idle_stop"]),
                        ttl_cell(None if ended else row["left_h"]),
                        "-" if row["cost_usd"] is None or ended else f"${row['cost_usd']:.2f}",
                        row["ip"] or "-",
                        *([guard.owner_of(instance)] if owner is None else []),
                    ]
                )
        if not rows:
            print(f"no dlstation instances in {', '.join(regions)}")
            return 0
        header = ["name", "id", "region", "type", "market", "state", "age", "idle", "TTL left"]
        header += ["cost so far", "address", *(["owner"] if owner is None else [])]
        print(table(header, rows))
        for note in notes:
            print(note)
        return 0

    @staticmethod
    def idle_cell(ec2: Any, instance: dict[str, Any], setting: str) -> str:
        """The idle-stop setting, with the idle time the watchdog last logged where readable."""
        if instance["State"]["Name"] != RUNNING or setting in ("-", "off"):
            return setting
        return fleet.idle_time(ec2, instance) or f"? of {setting} (no report)"

    def ssh(self) -> int:
        instance = fleet.find_by_name(self.aws.client("ec2"), self.args.name, self.owner())
        key_name = instance.get("KeyName", "")
        command = ssh_argv(instance, guard.key_dir() / f"{key_name}.pem")
        if self.args.print:
            print(shlex.join(command))
            return 0
        self.execute(command)
        return 0

    def keepalive(self) -> int:
        instance = fleet.find_by_name(self.aws.client("ec2"), self.args.name, self.owner())
        ssh = ssh_argv(instance, guard.key_dir() / f"{instance.get('KeyName', '')}.pem")
        command = idle.keepalive_argv(ssh, self.args.duration)
        if self.args.print:
            print(shlex.join(command))
            return 0
        self.execute(command)
        return 0

    def stop(self) -> int:
        ec2 = self.aws.client("ec2")
        instance = fleet.find_by_name(ec2, self.args.name, self.owner())
        fleet.stop(ec2, instance)
        print(
            f"stopped {self.args.name} ({instance['InstanceId']}); its disk still bills: "
            f"`{shlex.join(['dlcloud', '--region', self.aws.region, 'terminate', self.args.name])}`"
            " when you are done"
        )
        return 0

    def terminate(self) -> int:
        if self.args.name is not None:
            guard.check_name(self.args.name)
        inventory.check(self.inventory_path())
        ec2 = self.aws.client("ec2")
        owner = self.owner()
        if self.args.all:
            targets = fleet.owned_instances(ec2, owner, LIVE_STATES)
        else:
            targets = [fleet.find_by_name(ec2, self.args.name, owner)]
        if not targets:
            print(f"no dlcloud instances of yours to terminate in {self.aws.region}")
            return 0
        mine = self.aws.caller()
        names = ", ".join(
            f"{guard.name_of(i)} ({i['InstanceId']}"
            + ("" if guard.owner_of(i) == mine else f", {guard.owner_of(i)}'s")
            + ")"
            for i in targets
        )
        if not self.args.yes and not self.confirm(f"terminate {names}?"):
            print("nothing terminated (pass --yes to skip this question)")
            return 1
        print(f"terminating {names}")
        done = fleet.terminate(ec2, targets, self.scope(), self.now())
        print("\n".join(done.lines()))
        return 0

    def reap(self) -> int:
        inventory.check(self.inventory_path())
        ec2 = self.aws.client("ec2")
        plan = fleet.find_leftovers(ec2, self.now(), self.aws.caller())
        if plan.empty():
            done = fleet.Cleanup(kept=fleet.kept_volumes(plan))
            fleet.remove_unused(ec2, set(), set(), self.scope(), done)  # ended hosts only
            print("\n".join([f"nothing to reap in {self.aws.region}", *done.lines()]))
            return 0
        print("\n".join(plan.lines()))
        if not self.args.yes and not self.confirm("remove all of these?"):
            print("nothing removed (pass --yes to skip this question)")
            return 1
        done = fleet.reap(ec2, plan, self.scope(), self.now())
        print("\n".join(done.lines()))
        return 0

    def bench(self) -> int:
        return campaign.run_command(
            self.args,
            self.aws,
            self.catalog,
            now=self.now,
            confirm=self.confirm,
            checkip=self.checkip,
        )


def ttl_cell(left: float | None) -> str:
    return "-" if left is None else ("EXPIRED" if left <= 0 else f"{left:.1f}h")


def main(argv: Sequence[str] | None = None, **seams: Any) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    commands = Commands(args, **seams)
    try:
        handler: Callable[[], int] = getattr(commands, args.command)
        with interrupts.raised():
            return handler()
    except AWS_FAILURES as error:  # one the commands did not expect: still advice, no traceback
        cloud_error = explain(error, f"dlcloud {args.command}")
        print(f"dlcloud: {cloud_error}", file=sys.stderr)
        return cloud_error.exit_code
    except CloudError as error:
        print(f"dlcloud: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as error:  # SIGINT, SIGTERM or SIGHUP (interrupts.Interrupted)
        stopped = interrupts.as_interrupted(error)
        print(f"dlcloud: {stopped.summary()}", file=sys.stderr)
        return stopped.exit_code
    except Exception:  # a bug of ours: the traceback to report, and never a verdict's code
        traceback.print_exc()
        print(
            f"dlcloud: internal error in `dlcloud {args.command}` (exit {INTERNAL}): "
            "please report the traceback above",
            file=sys.stderr,
        )
        return INTERNAL
