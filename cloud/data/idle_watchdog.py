#!/usr/bin/env python3
"""dlstation idle stop, run every minute on the instance: power off once nothing used it for long.

Standard library only: it runs under the image's /usr/bin/python3, outside any venv.
Busy means any of: a process holding a context on a GPU (or a GPU at DLSTATION_IDLE_GPU_PERCENT
or more), an SSH session with or without a terminal, an Ansible or bench process, a busy or
recently active Jupyter kernel, any process (kernel threads aside) that used more than
DLSTATION_IDLE_CPU_SHARE of a core since the last round, or an unexpired keep-alive. A check
that cannot tell counts as busy, and says for how long it could not. Time is the boot clock.
Every decision is one line on stdout (the journal, and the console that `dlcloud list` reads).
`idle_watchdog.py keepalive 2h` (or `off`) sets the keep-alive.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PREFIX = "dlstation-idle:"
COMMAND_TIMEOUT_S = 20
KEEPALIVE_FILE = "/run/dlstation/keepalive"
STATE_FILE = "/run/dlstation/idle-state.json"
PF_KTHREAD = 0x00200000
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# sshd's per-connection processes once a user is in: "sshd: ubuntu", "sshd: ubuntu@notty",
# "sshd: ubuntu@pts/0", "sshd: ubuntu [priv]" (OpenSSH 9.8+ names them "sshd-session: ...").
# Not the listener ("sshd: /usr/sbin/sshd -D [listener] ...") nor "[preauth]"/"[net]".
SSH_SESSION = re.compile(r"^sshd(?:-session)?: ([a-z_][\w.-]*\$?)(@\S+)?(?: \[priv\])?$")
# Ansible's shapes: "/bin/sh -c '... python3 && sleep 0'" around every module it runs (with
# pipelining python3 reads the module on stdin; become nests sudo inside), ".../AnsiballZ_pip.py"
# (an async task, detached, outlives that shell), and ansible-playbook itself between tasks.
ANSIBLE = re.compile(r"&& sleep 0\s*$|AnsiballZ_|/ansible(?:-\w+)?$")
# The bench package run any way: dlbench, python -m bench[.x], python .../bench/x.py.
BENCH = re.compile(r"(?:^|/)dlbench$|(?:^|/)bench/[\w/]*\.py$")


@dataclass(frozen=True)
class Config:
    """The watchdog's settings, from its environment file."""

    period: float
    state: Path = Path(STATE_FILE)
    keepalive: Path = Path(KEEPALIVE_FILE)
    proc: Path = Path("/proc")
    ssh_ports: tuple[int, ...] = (22,)
    cpu_share: float = 0.2
    gpu_percent: float = 5.0
    jupyter_url: str = "http://127.0.0.1:8888"
    jupyter_token_file: Path = Path("/opt/dlstation/jupyter/token.env")
    # Count only processes whose environment, or an ancestor's, holds KEY=VALUE (sshd rewrites
    # its own environment with its title, so its sessions are found through their parent).
    only_env: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Config:
        ports = env.get("DLSTATION_IDLE_SSH_PORTS", "22")
        return cls(
            period=float(env["DLSTATION_IDLE_SECONDS"]),
            state=Path(env.get("DLSTATION_IDLE_STATE", STATE_FILE)),
            keepalive=Path(env.get("DLSTATION_KEEPALIVE_FILE", KEEPALIVE_FILE)),
            proc=Path(env.get("DLSTATION_IDLE_PROC", "/proc")),
            ssh_ports=tuple(int(port) for port in ports.split(",") if port.strip()),
            cpu_share=float(env.get("DLSTATION_IDLE_CPU_SHARE", "0.2")),
            gpu_percent=float(env.get("DLSTATION_IDLE_GPU_PERCENT", "5")),
            jupyter_url=env.get("DLSTATION_JUPYTER_URL", "http://127.0.0.1:8888").rstrip("/"),
            jupyter_token_file=Path(
                env.get("DLSTATION_JUPYTER_TOKEN_FILE", "/opt/dlstation/jupyter/token.env")
            ),
            only_env=env.get("DLSTATION_IDLE_ONLY_ENV") or None,
        )


@dataclass(frozen=True)
class Clock:
    """The boot clock (counts suspend, never steps) and the wall clock (only to read stamps)."""

    boot: Callable[[], float] = lambda: time.clock_gettime(time.CLOCK_BOOTTIME)
    wall: Callable[[], float] = time.time

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Clock:
        boot, wall = env.get("DLSTATION_IDLE_BOOT_NOW"), env.get("DLSTATION_IDLE_NOW")
        return cls(
            boot=(lambda: float(boot)) if boot else cls.boot,
            wall=(lambda: float(wall)) if wall else cls.wall,
        )


@dataclass
class Proc:
    pid: int
    ppid: int
    argv: list[str]
    ticks: int
    start: int
    kthread: bool
    in_scope: bool


@dataclass
class Round:
    """What one round sees, and the state it hands to the next."""

    config: Config
    now: float  # boot clock
    wall: float
    old: dict[str, Any]
    new: dict[str, Any] = field(default_factory=dict)
    busy: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    activity: list[float] = field(default_factory=list)
    procs: dict[int, Proc] = field(default_factory=dict)

    def unknown(self, check: str, why: str) -> None:
        """A check that cannot tell: busy, with how long it has not been able to."""
        since = self.old.get("unknown", {}).get(check, self.now)
        since = min(float(since), self.now)
        self.new.setdefault("unknown", {})[check] = since
        self.busy.append(f"{check}: cannot tell for {span(self.now - since)} ({why})")


def span(seconds: float) -> str:
    minutes = int(max(seconds, 0) // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def run_tool(argv: list[str]) -> str:
    """A tool's stdout; OSError or RuntimeError saying why it gave none."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{argv[0]} timed out") from error
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {(done.stderr or done.stdout).strip()[:120]}")
    return done.stdout


def gpu_check(r: Round) -> None:
    """Any process holding a context on a GPU, whatever its utilisation; or a GPU in use."""
    query = ["nvidia-smi", "--format=csv,noheader,nounits"]
    try:
        apps = run_tool([*query, "--query-compute-apps=pid,process_name"])
        gpus = run_tool([*query, "--query-gpu=index,utilization.gpu"])
    except (OSError, RuntimeError) as error:
        r.unknown("gpu", str(error))
        return
    holders = [line.strip() for line in apps.splitlines() if line.strip()]
    if holders:
        pids = ", ".join(f"pid {line.split(',')[0].strip()}" for line in holders[:3])
        r.busy.append(f"gpu: {len(holders)} process(es) on a GPU ({pids})")
    for line in gpus.splitlines():
        index, _, value = line.partition(",")
        try:
            percent = float(value)
        except ValueError:
            r.unknown("gpu", f"unreadable nvidia-smi line {line!r}")
            return
        if percent >= r.config.gpu_percent:
            r.busy.append(f"gpu: GPU {index.strip()} at {percent:g}%")


def read_processes(config: Config) -> dict[int, Proc]:
    """Every process under /proc, each marked whether it is in the configured scope."""
    procs = {}
    want = config.only_env.encode() if config.only_env else None
    for entry in config.proc.iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            in_scope = want is None or want in (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # it ended meanwhile
        fields = stat[stat.rfind(")") + 2 :].split()  # the name in (...) may hold spaces
        procs[int(entry.name)] = Proc(
            pid=int(entry.name),
            ppid=int(fields[1]),
            argv=[arg for arg in argv if arg] or [],
            ticks=int(fields[11]) + int(fields[12]),
            start=int(fields[19]),
            kthread=bool(int(fields[6]) & PF_KTHREAD),
            in_scope=in_scope,
        )
    if want is not None:
        marked = {pid for pid, proc in procs.items() if proc.in_scope}
        for proc in procs.values():
            proc.in_scope = any(p.pid in marked for p in lineage(procs, proc))
    return procs


def lineage(procs: dict[int, Proc], proc: Proc) -> list[Proc]:
    """The process and its ancestors, nearest first."""
    chain, seen = [proc], {proc.pid}
    while (parent := procs.get(chain[-1].ppid)) and parent.pid not in seen:
        chain.append(parent)
        seen.add(parent.pid)
    return chain


def is_bench(argv: list[str]) -> bool:
    module = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-m"), None)
    module = module or next((arg[2:] for arg in argv if arg.startswith("-m")), "")
    if module == "bench" or module.startswith("bench."):
        return True
    return any(BENCH.search(arg) for arg in argv[:2])


def process_check(r: Round) -> None:
    """SSH sessions, Ansible and bench processes, and real CPU use since the last round."""
    try:
        r.procs = read_processes(r.config)
    except OSError as error:
        r.unknown("processes", f"cannot list {r.config.proc}: {error}")
        return
    sessions, ansible, bench, cpu = [], [], [], []
    previous = r.old.get("cpu", {})
    elapsed = r.now - float(r.old.get("cpu_at", r.now))
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    r.new["cpu"] = {}
    for proc in r.procs.values():
        if not proc.in_scope or proc.kthread or not proc.argv:
            continue
        match = SSH_SESSION.match(" ".join(proc.argv).strip())
        if match:
            sessions.append(f"{match.group(1)}{match.group(2) or ''} (pid {proc.pid})")
        elif any(ANSIBLE.search(arg) for p in lineage(r.procs, proc) for arg in p.argv):
            ansible.append(proc.pid)
        elif is_bench(proc.argv):
            bench.append(proc.pid)
        key = f"{proc.pid}:{proc.start}"  # a reused pid is another process
        r.new["cpu"][key] = proc.ticks
        if key in previous and elapsed > 0:
            share = (proc.ticks - int(previous[key])) / ticks_per_s / elapsed
            if share > r.config.cpu_share:
                cpu.append(f"pid {proc.pid} {Path(proc.argv[0]).name} at {share:.0%}")
    r.new["cpu_at"] = r.now
    if sessions:
        r.busy.append(f"ssh: {len(sessions)} session process(es): {', '.join(sessions[:3])}")
    if ansible:
        r.busy.append(f"ansible: {len(ansible)} process(es) (pid {min(ansible)})")
    if bench:
        r.busy.append(f"bench: {len(bench)} process(es) (pid {min(bench)})")
    if cpu:
        r.busy.append(f"cpu: {', '.join(cpu[:3])} of a core")


def connection_check(r: Round) -> None:
    """Established TCP connections to the SSH port: a session whatever sshd titles it."""
    ports = {f"{port:04X}" for port in r.config.ssh_ports}
    count = 0
    for name in ("tcp", "tcp6"):
        try:
            lines = (r.config.proc / "net" / name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue  # no IPv6 here
        except OSError as error:
            r.unknown("ssh", f"cannot read /proc/net/{name}: {error}")
            return
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "01" and fields[1].rsplit(":", 1)[-1] in ports:
                count += 1
    if count:
        ports_text = ",".join(map(str, r.config.ssh_ports))
        r.busy.append(f"ssh: {count} connection(s) to port {ports_text}")


def jupyter_token(path: Path) -> str | None:
    """JUPYTER_TOKEN from the service's environment file, if there is one."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "JUPYTER_TOKEN":
            return value.strip().strip("'\"")
    return None


def parse_stamp(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


def read_kernels(config: Config) -> list[Any] | str:
    """The kernels JupyterLab reports, or why they could not be read."""
    request = urllib.request.Request(f"{config.jupyter_url}/api/kernels")
    try:
        token = jupyter_token(config.jupyter_token_file)
    except OSError as error:
        return f"cannot read the token: {error}"
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=COMMAND_TIMEOUT_S) as response:
            kernels = json.loads(response.read())
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return []  # no JupyterLab listening: no kernel can be busy
        return f"/api/kernels: {error}"
    except (OSError, ValueError) as error:
        return f"/api/kernels: {error}"
    if not isinstance(kernels, list) or not all(isinstance(k, dict) for k in kernels):
        return f"/api/kernels answered {json.dumps(kernels)[:60]}, not a list of kernels"
    return kernels


def jupyter_check(r: Round) -> None:
    """A busy kernel; otherwise each kernel's last activity, on the boot clock."""
    kernels = read_kernels(r.config)
    if isinstance(kernels, str):
        r.unknown("jupyter", kernels)
        return
    seen = r.old.get("kernels", {})
    r.new["kernels"] = {}
    for kernel in kernels:
        name = str(kernel.get("id", "?"))
        state = kernel.get("execution_state")
        if state in ("busy", "starting"):
            r.busy.append(f"jupyter: kernel {name} is {state}")
        text = kernel.get("last_activity")
        stamp = parse_stamp(text)
        if stamp is None:
            continue
        ago = r.wall - stamp
        if ago >= 0:
            active = r.now - ago
        else:  # a stamp ahead of the wall clock: count it once, when first seen
            old = seen.get(name)
            active = float(old[1]) if old and old[0] == text and old[1] <= r.now else r.now
            r.notes.append(f"kernel {name} last_activity {text} is in the future, counted from")
            r.notes[-1] += f" when first seen, {span(r.now - active)} ago"
        r.new["kernels"][name] = [text, active]
        r.activity.append(active)


def keepalive_check(r: Round) -> None:
    """A keep-alive the user set (`keepalive 2h`): busy until it expires."""
    try:
        text = r.config.keepalive.read_text()
    except FileNotFoundError:
        return
    except OSError as error:
        r.unknown("keep-alive", f"cannot read {r.config.keepalive}: {error}")
        return
    try:
        until = float(text.split()[0])
    except (IndexError, ValueError):
        r.unknown("keep-alive", f"{r.config.keepalive} holds no expiry")
        return
    if until > r.now:
        r.busy.append(f"keep-alive: {span(until - r.now)} left")


CHECKS = (keepalive_check, gpu_check, process_check, connection_check, jupyter_check)


def load_state(path: Path, now: float) -> tuple[dict[str, Any], str | None]:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as error:
        return {}, f"state {path} unreadable ({error}); counting from now"
    if not isinstance(state, dict):
        return {}, f"state {path} unreadable; counting from now"
    if float(state.get("idle_since", 0)) > now:  # a boot clock behind the state: a new boot
        return {}, "state from another boot; counting from now"
    return state, None


def save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(state))
    temporary.replace(path)


def decide(config: Config, clock: Clock) -> tuple[bool, str]:
    """One round: (power off now?, the decision line); the state is saved for the next."""
    now, wall = clock.boot(), clock.wall()
    old, problem = load_state(config.state, now)
    r = Round(config, now, wall, old)
    if problem:
        r.notes.append(problem)
    for check in CHECKS:
        try:
            check(r)
        except Exception as error:  # a check's own failure is "cannot tell", never a crash
            r.unknown(check.__name__.removesuffix("_check"), f"{type(error).__name__}: {error}")
    limit = span(config.period)
    if r.busy:
        r.new["idle_since"] = now
        line = f"{PREFIX} busy, idle 0m of {limit}: {'; '.join(r.busy)}"
        off = False
    else:
        since = max([float(old.get("idle_since", now)), *r.activity])
        since = min(since, now)
        r.new["idle_since"] = since
        off = now - since >= config.period
        line = f"{PREFIX} idle {span(now - since)} of {limit}: nothing in use"
        line += "; powering off" if off else ""
    if r.notes:
        line += f" (note: {'; '.join(r.notes)})"
    r.new["last"] = line
    save_state(config.state, r.new)
    return off, line


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise ValueError(f"{text!r}: write e.g. 90m, 2h or 1d, or off")
    return float(match.group(1)) * UNITS[match.group(2)]


def keepalive(argv: list[str], config_path: Path, clock: Clock) -> int:
    """`keepalive 2h`: busy for 2 hours from now (boot clock); `keepalive off` clears it."""
    if len(argv) != 1:
        print("usage: idle_watchdog.py keepalive DURATION|off (e.g. 2h)", file=sys.stderr)
        return 2
    if argv[0] == "off":
        config_path.unlink(missing_ok=True)
        print(f"{PREFIX} keep-alive cleared")
        return 0
    try:
        seconds = parse_duration(argv[0])
    except ValueError as error:
        print(f"keepalive {error}", file=sys.stderr)
        return 2
    config_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = config_path.with_name(config_path.name + ".tmp")
    temporary.write_text(f"{clock.boot() + seconds:.0f}\n# boot-clock second it expires\n")
    temporary.replace(config_path)
    print(f"{PREFIX} keep-alive set: busy for {span(seconds)} (until a reboot at most)")
    return 0


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    clock = Clock.from_env(env)
    if argv[:1] == ["keepalive"]:
        return keepalive(argv[1:], Path(env.get("DLSTATION_KEEPALIVE_FILE", KEEPALIVE_FILE)), clock)
    config = Config.from_env(env)
    try:
        off, line = decide(config, clock)
    except Exception as error:  # never a traceback instead of a decision
        print(f"{PREFIX} busy, idle 0m of {span(config.period)}: watchdog: {error!r}", flush=True)
        return 0
    print(line, flush=True)
    if not off:
        return 0
    command = shlex.split(env.get("DLSTATION_IDLE_POWEROFF", "systemctl poweroff"))
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
