"""`dlcloud bench`: rent each instance type, set it up, benchmark it, rank them, leave nothing.

One campaign: plan and confirm, launch every type in parallel through the Launcher, wait for
SSH, run setup.yml and bench.yml on exactly those hosts, fetch the results, terminate all of it
in a `finally` (the TTL watchdog is the backstop), and write one report ranking the types.
A campaign folder keeps its state: running the same --name again reuses the results it holds.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.facts.catalog import Catalog
from bench.subprocesses import run_streamed
from cloud import campaign_report, fleet, guard, interrupts, inventory, playbooks
from cloud.aws import LIVE_STATES, RUNNING, Aws, CloudError, aws_errors
from cloud.campaign_options import Options, options_from
from cloud.campaign_report import money
from cloud.campaign_state import (
    DONE,
    FAILED,
    REUSED,
    Host,
    complete_result,
    load_state,
    save_state,
)
from cloud.launcher import Launcher, LaunchRequest, Plan
from cloud.playbooks import CLONE

SSH_PROBE_ENV = "DLCLOUD_SSH_PROBE"  # host:port to probe instead of each instance's port 22
SSH_TIMEOUT_S = 600
HEARTBEAT_S = 60  # a progress line at least this often, even in a long step

Confirm = Callable[[str], bool]
Say = Callable[[str], None]


# -- seams: subprocesses and SSH -------------------------------------------------------------


# dlcloud's children (ansible-playbook, the report) run the way dlbench's workers do.
run_logged = run_streamed


RunLogged = Callable[..., int]


def wait_for_ssh(address: str, stopping: threading.Event, timeout_s: float = SSH_TIMEOUT_S) -> None:
    """Until a TCP connection to SSH succeeds; $DLCLOUD_SSH_PROBE (host:port) replaces address."""
    probe = os.environ.get(SSH_PROBE_ENV)
    host, port = probe.rsplit(":", 1) if probe else (address, "22")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise CloudError(f"SSH on {host}:{port} did not answer in {timeout_s:.0f} s") from (
                    error
                )
            if stopping.wait(3):
                raise CloudError("stopped while waiting for SSH") from error


def say_now(line: str) -> None:
    """Progress reaches a pipe (CI logs, tee) as it happens, not when the buffer fills."""
    print(line, flush=True)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# -- the campaign ----------------------------------------------------------------------------


class Campaign:
    """Plan, launch, set up, benchmark, terminate and report; seams injectable for tests."""

    def __init__(
        self,
        options: Options,
        aws: Aws,
        catalog: Catalog,
        *,
        now: Callable[[], datetime] = utc_now,
        confirm: Confirm,
        checkip: Callable[[], str] | None = None,
        run: RunLogged = run_logged,
        ssh_ready: Callable[[str, threading.Event], None] = wait_for_ssh,
        say: Say = say_now,
        key_folder: Path | None = None,
        waiter_config: dict[str, int] | None = None,
    ) -> None:
        self.options = options
        self.stopping = threading.Event()  # set on the way out: threads stop waiting
        self.terminated: list[str] = []  # "i-... (host)" for every instance teardown ended
        self.aws = aws
        self.catalog = catalog
        self.now = now
        self.confirm = confirm
        self.run = run
        self.ssh_ready = ssh_ready
        self.say = say
        self.launcher = Launcher(
            aws,
            catalog,
            now=now,
            checkip=checkip,
            key_folder=key_folder or guard.key_dir(),
            waiter_config=waiter_config,
            say=say,
            stopping=self.stopping,
        )
        self.folder = options.folder
        self.inventory = inventory.default_path()
        self.started = time.monotonic()
        self.hosts = load_state(self.folder)
        for kind in options.types:
            self.hosts.setdefault(kind, Host(kind, options.host(kind)))
        self.executor: ThreadPoolExecutor | None = None
        self.phase = ""  # the role or task ansible is in, for progress lines
        self.writing = threading.Lock()  # state.json and the inventory, from launch threads
        self.bills: list[str] = []  # one line per terminated instance: how long, what it cost

    # -- progress --------------------------------------------------------------------------

    def cost_so_far(self) -> float:
        now = self.now()
        return sum(h.hours(now) * (h.usd_per_hour or 0) for h in self.hosts.values())

    def progress(self, who: str, step: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        self.say(
            f"[{elapsed // 60:3d}m{elapsed % 60:02d}s  ${self.cost_so_far():7.3f}]  {who}: {step}"
        )

    @contextmanager
    def heartbeat(self, who: str) -> Iterator[None]:
        """While a playbook runs a long task (dlbench verify, run), say it is still there."""
        finished = threading.Event()

        def beat() -> None:
            while not finished.wait(HEARTBEAT_S):
                self.progress(who, f"still in {self.phase}")

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            finished.set()
            thread.join()

    # -- plan ------------------------------------------------------------------------------

    def missing(self) -> list[str]:
        """Types without a complete result in the campaign folder."""
        todo = []
        for kind in self.options.types:
            host = self.hosts[kind]
            if complete_result(self.results_dir / f"{host.host}.json"):
                host.status, host.reason = REUSED, None
            else:
                host.status, host.reason = "planned", None
                todo.append(kind)
        return todo

    @property
    def results_dir(self) -> Path:
        return self.folder / "results"

    def request(self, kind: str) -> LaunchRequest:
        o = self.options
        return o.machine.request(kind, o.host(kind), campaign=o.name)

    def plan(self, kinds: list[str]) -> list[Plan]:
        """The launcher's preflight per type, then the vCPU quota per family for all together."""
        plans = [self.launcher.preflight(self.request(kind)) for kind in kinds]
        lines = [f"campaign {self.options.name!r} in {self.aws.region}, folder {self.folder}"]
        most = 0.0
        seen: set[str] = set()  # one quota warning, not one per type
        for plan in plans:
            host = self.hosts[plan.request.instance_type]
            spec = self.catalog.get(host.instance_type)
            host.gpu = f"{spec.gpu_count}x {spec.gpu}"
            host.usd_per_hour = plan.price.usd_per_hour
            cap = plan.cost_for_ttl()
            most += cap or 0
            lines.append(
                f"  {host.instance_type:<14} {host.gpu:<14} "
                f"{money(plan.price.usd_per_hour, 4)}/h  at most {money(cap, 2)} in "
                f"{self.options.machine.ttl_text} ({plan.price.basis})"
            )
            lines += [f"    warning: {w}" for w in plan.warnings if w not in seen]
            seen.update(plan.warnings)
        reused = [k for k in self.options.types if self.hosts[k].status == REUSED]
        if reused:
            lines.append(f"  reusing the results of {', '.join(reused)}: not launched again")
        lines += self.family_quotas(plans)
        lines.append(
            f"  most possible cost: {money(most, 2)} (TTL {self.options.machine.ttl_text} x price, "
            f"all {len(plans)} types); every instance is terminated when the campaign ends"
        )
        idle = self.options.machine.idle_stop
        stops = "only the TTL" if guard.parse_idle(idle) is None else f"{idle} idle, or the TTL,"
        lines.append(f"  should this controller die, {stops} stops each instance")
        lines.append(f"  dlbench run {shlex.join(self.options.dlbench_args())}")
        self.say("\n".join(lines))
        return plans

    def family_quotas(self, plans: list[Plan]) -> list[str]:
        """Types of one quota family share its vCPU quota: check them together."""
        needed: dict[str, int] = {}
        for plan in plans:
            spec = self.catalog.get(plan.request.instance_type)
            needed[spec.quota_class] = needed.get(spec.quota_class, 0) + spec.vcpus
        lines = []
        market = "spot" if self.options.machine.spot else "on-demand"
        for family, vcpus in sorted(needed.items()):
            code = self.catalog.quota_codes[market][family]
            try:
                with aws_errors("reading the vCPU quota"):
                    quota = self.aws.client("service-quotas").get_service_quota(
                        ServiceCode="ec2", QuotaCode=code
                    )["Quota"]["Value"]
            except CloudError:
                lines.append(f"  quota {family}: unreadable ({code}); {vcpus} vCPUs needed")
                continue
            used = self.launcher.vcpus_in_use(family)
            if used + vcpus > quota:
                raise CloudError(
                    f"the campaign needs {vcpus} {market} {family}-family vCPUs at once but the "
                    f"quota {code} is {quota:g} with {used} in use\n  what to do: request more "
                    "in Service Quotas (EC2), or bench fewer types per campaign",
                    2,
                )
            lines.append(
                f"  quota {family}: {quota:g} vCPUs ({code}), {used} in use, {vcpus} needed"
            )
        return lines

    # -- run -------------------------------------------------------------------------------

    def execute(self) -> int:
        """The whole campaign; exit 0 when every type has a result, 1 when some failed."""
        todo = self.missing()
        plans = self.plan(todo) if todo else []
        if not todo:
            self.say("every type has its result in the campaign folder: launching nothing")
        elif not self.options.yes and not self.confirm(f"launch {len(plans)} instance(s)?"):
            self.say("nothing launched (pass --yes to skip this question)")
            return 1
        save_state(self.folder, self.hosts)
        try:
            if plans:
                ready = self.launch_all(plans)
                ready = self.playbook("setup.yml", ready, self.setup_vars())
                self.playbook("bench.yml", ready, self.bench_vars(ready))
                for kind in ready:
                    self.collect(kind)
        except KeyboardInterrupt as error:  # SIGINT, SIGTERM or SIGHUP
            stopped = interrupts.as_interrupted(error)
            self.finish()
            stopped.cleaned, stopped.terminated = True, self.all_terminated()
            raise stopped from None
        except BaseException:
            self.finish()
            raise
        try:
            self.finish()
        except interrupts.Interrupted as late:  # came during the cleanup, which finished first
            late.cleaned, late.terminated = True, self.all_terminated()
            raise
        failed = [h for h in self.hosts.values() if h.status == FAILED]
        return 1 if failed else 0

    def all_terminated(self) -> list[str]:
        """What teardown terminated, and what launches that were stopped on the way ended."""
        return self.launcher.abandoned + self.terminated

    def finish(self) -> None:
        """Terminate everything, then report; signals meanwhile wait until both are done."""
        self.stopping.set()
        with interrupts.deferred():
            try:
                self.teardown()
            finally:
                self.report()

    def report(self) -> None:
        """campaign.json and `dlbench report`, then each type's outcome, the cost, the ranking."""
        document = campaign_report.summary(
            self.options, self.hosts, self.catalog, self.aws.region, self.now()
        )
        campaign_report.report(document, self.folder, self.bills, run=self.run, say=self.say)

    def launch_all(self, plans: list[Plan]) -> list[str]:
        """Every type at once, once the key pair and SSH group they share exist."""
        ready: list[str] = []
        try:
            # Made once here: two launches creating them at the same moment would rely on
            # the AWS API refusing the second, which not every endpoint (moto) guarantees.
            self.launcher.access(plans[0])
        except CloudError as error:
            for plan in plans:
                self.hosts[plan.request.instance_type].fail(f"launch: {str(error).splitlines()[0]}")
            self.progress("campaign", f"no key pair or SSH group: {error}")
            return ready
        executor = ThreadPoolExecutor(max_workers=len(plans))
        try:
            pending: set[Future[str | None]] = {executor.submit(self.bring_up, p) for p in plans}
            while pending:
                done, pending = wait(pending, timeout=HEARTBEAT_S, return_when=FIRST_COMPLETED)
                if not done:
                    self.progress("campaign", "waiting for instances")
                ready += [kind for kind in (f.result() for f in done) if kind]
        finally:
            # On Ctrl-C the threads still starting instances finish before the sweep runs.
            executor.shutdown(wait=False, cancel_futures=True)
            self.executor = executor
        return [p.request.instance_type for p in plans if p.request.instance_type in ready]

    def bring_up(self, plan: Plan) -> str | None:
        """Launch one type and wait for SSH; a failure becomes its row's reason."""
        kind = plan.request.instance_type
        host = self.hosts[kind]
        stage = "launch"
        try:
            self.progress(host.host, f"launching {kind}")
            host.status = "launching"
            instance = self.ready_instance(plan.request)
            if instance["InstanceId"] not in {r["id"] for r in host.instances}:
                host.instances.append(
                    {
                        "id": instance["InstanceId"],
                        "launched_at": instance["LaunchTime"].isoformat(),
                        "ended_at": "",
                    }
                )
            key_name = instance.get("KeyName") or plan.request.key_name or ""
            # Launches end at the same moment: one writer at a time, or an update is lost.
            with self.writing:
                save_state(self.folder, self.hosts)
                inventory.add_host(
                    self.inventory,
                    host.host,
                    instance,
                    self.aws.region,
                    self.launcher.key_folder / f"{key_name}.pem",
                )
            address = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress", "")
            self.progress(host.host, f"{instance['InstanceId']} running at {address}; waiting SSH")
            host.status = stage = "ssh"
            self.ssh_ready(address, self.stopping)
        except CloudError as error:
            host.fail(f"{stage}: {str(error).splitlines()[0]}")
            self.progress(host.host, host.reason or "failed")
            return None
        self.progress(host.host, "SSH answers")
        return kind

    def ready_instance(self, request: LaunchRequest) -> dict[str, Any]:
        """Launched, or the one of that name a run whose controller died left: running."""
        instance = self.launcher.ensure(request)
        state = instance["State"]["Name"]
        if state == "pending":
            return self.launcher.wait_until_ready(instance["InstanceId"])
        if state != RUNNING:
            raise CloudError(
                f"{instance['InstanceId']} of that name is {state}; this campaign terminates it, "
                "run it again"
            )
        return instance

    # -- ansible ---------------------------------------------------------------------------

    def setup_vars(self) -> dict[str, Any]:
        return {"verify_fetch_dir": playbooks.unsafe(str(self.folder / "verify"))}

    def bench_vars(self, kinds: list[str]) -> dict[str, Any]:
        """bench.yml's dlbench arguments per host (an argv list), priced at the campaign's price.

        Every value the user typed is data to Ansible (unsafe): a `{{` in it is never run.
        """
        per_host = {}
        for kind in kinds:
            host = self.hosts[kind]
            price = (
                [] if host.usd_per_hour is None else ["--price-per-hour", f"{host.usd_per_hour}"]
            )
            per_host[host.host] = playbooks.unsafe(self.options.dlbench_args() + price)
        return {
            "bench_fetch_dir": playbooks.unsafe(str(self.results_dir)),
            "dlcloud_bench_argv": per_host,
            "bench_argv": "{{ dlcloud_bench_argv[inventory_hostname] }}",
        }

    def playbook(self, name: str, kinds: list[str], variables: dict[str, Any]) -> list[str]:
        """Run a playbook on exactly these hosts; returns the types that came through."""
        if not kinds:
            return []
        by_host = {self.hosts[k].host: k for k in kinds}
        step = name.removesuffix(".yml")
        for kind in kinds:
            self.hosts[kind].status = step
        argv = playbooks.argv(
            name, self.inventory, list(by_host), variables, self.options.ansible_args
        )
        env = playbooks.environment()
        seen: set[str] = set()

        def on_line(line: str) -> None:
            event = playbooks.event_of(line)
            if event is not None:
                self.on_event(step, event, by_host, seen)

        names = ", ".join(by_host)
        self.progress(names, f"{name} starts (log: {self.folder / 'ansible.log'})")
        with self.heartbeat(names):
            code = self.run(
                argv, env=env, cwd=Path.cwd(), log=self.folder / "ansible.log", on_line=on_line
            )
        for host_name, kind in by_host.items():
            if host_name not in seen and self.hosts[kind].status != FAILED:
                self.hosts[kind].fail(
                    f"{name} did not reach this host (exit {code}; see ansible.log)"
                )
        save_state(self.folder, self.hosts)
        return [k for k in kinds if self.hosts[k].status != FAILED]

    def on_event(
        self, step: str, event: dict[str, Any], by_host: dict[str, str], seen: set[str]
    ) -> None:
        """One jsonl event of ansible: progress, the verify verdict, a host's failure."""
        phase = playbooks.phase_of(event)
        if phase is not None:
            # One line per role (setup.yml) or per task (bench.yml): the step, not the noise.
            if phase != self.phase:
                self.phase = phase
                self.progress(", ".join(by_host), f"{step}.yml: {phase}")
            return
        for found in playbooks.host_results(step, event):
            if found.host not in by_host:
                continue
            seen.add(found.host)
            host = self.hosts[by_host[found.host]]
            if found.verdict:
                host.verdict = found.verdict
            if found.failure:
                host.fail(found.failure)
                self.progress(found.host, host.reason or "failed")

    def collect(self, kind: str) -> None:
        host = self.hosts[kind]
        if complete_result(self.results_dir / f"{host.host}.json"):
            host.status = DONE
            self.progress(host.host, "result fetched")
        else:
            host.fail("bench: no complete result file came back")

    # -- teardown and report ---------------------------------------------------------------

    def teardown(self) -> None:
        """Terminate every instance this campaign started, found by id and by name."""
        executor = self.executor
        names = {h.host for h in self.hosts.values()}
        ec2 = self.aws.client("ec2")
        scope = fleet.Scope(self.aws.caller(), self.launcher.key_folder, self.inventory)
        for attempt in range(2):
            # Only this campaign's own instances: never one of the same name launched by hand.
            live = [
                i
                for i in fleet.owned_instances(ec2, scope.owner, LIVE_STATES)
                if guard.tags_of(i).get(guard.TAG_NAME) in names
                and guard.tags_of(i).get(guard.TAG_CAMPAIGN) == self.options.name
            ]
            if live:
                self.progress("campaign", f"terminating {', '.join(i['InstanceId'] for i in live)}")
                done = fleet.terminate(ec2, live, scope, now=self.now())
                self.terminated += [
                    f"{i['InstanceId']} ({guard.tags_of(i).get(guard.TAG_NAME, '?')})"
                    for i in live
                    if i["InstanceId"] in done.instances
                ]
                self.bills += done.bills  # printed with the report, at the very end
                removed = replace(done, bills=[]).lines()
                self.say("\n".join(f"  {line}" for line in removed))
                with self.writing:  # a launch thread may still be adding its host
                    inventory.remove_hosts(self.inventory, set(done.instances))
            if attempt == 0 and executor is not None:
                executor.shutdown(wait=True)  # a launch still under way ends now; sweep again
        ended = self.now().isoformat()
        for host in self.hosts.values():
            if host.status not in (DONE, REUSED, FAILED):
                host.fail(f"interrupted while in step {host.status}")
            for record in host.instances:
                record["ended_at"] = record.get("ended_at") or ended
        save_state(self.folder, self.hosts)
        launched = {r["id"] for h in self.hosts.values() for r in h.instances}
        inventory.remove_hosts(self.inventory, launched)


def run_command(
    args: argparse.Namespace,
    aws: Aws,
    catalog: Catalog,
    *,
    now: Callable[[], datetime],
    confirm: Confirm,
    checkip: Callable[[], str] | None = None,
) -> int:
    """`dlcloud bench`, from parsed arguments to exit code."""
    options = options_from(args, now())
    if not (CLONE / "setup.yml").is_file():
        raise CloudError(
            f"dlcloud bench runs setup.yml and bench.yml from a dlstation clone; none at {CLONE}"
        )
    campaign = Campaign(options, aws, catalog, now=now, confirm=confirm, checkip=checkip)
    return campaign.execute()
