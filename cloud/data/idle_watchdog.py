#!/usr/bin/env python3
"""dlstation idle stop, run every minute on the instance: power off once nothing used it for long.

Standard library only: it runs under the image's /usr/bin/python3, outside any venv.
Busy means any of: a process holding a context on a GPU (or a GPU at DLSTATION_IDLE_GPU_PERCENT
or more; one that reports no utilisation, as under MIG, by its processes alone), an SSH, mosh
or SSM session, a tmux or screen server, an Ansible or bench process, a busy or recently active
Jupyter kernel, processes (kernel threads aside) that together used more than
DLSTATION_IDLE_CPU_SHARE of a core since the last round (reaped children included), network or
disk traffic above a rate, or an unexpired keep-alive. A check that cannot tell counts as busy,
and says for how long it could not. Time is the boot clock; a round sees at most
DLSTATION_IDLE_MAX_GAP_S since the one before, so time nobody watched never counts as idle.
Every decision is one line on stdout (the journal, and the console that `dlcloud list` reads).
`idle_watchdog.py keepalive 2h` (or `off`) sets the keep-alive.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
import threading
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
MAX_GAP_S = 120  # two timer intervals: a round sees at most this much idle time since the last
MAX_KEEPALIVE_S = 7 * 86400  # the longest TTL: no keep-alive outlives it
NET_BYTES_S = 50_000  # bytes/s received+sent on non-loopback interfaces that count as use
DISK_BYTES_S = 1_000_000  # bytes/s read+written on whole disks that count as use
# Whole disks in /proc/diskstats (partitions, loop, ram and device-mapper would count twice).
WHOLE_DISK = re.compile(r"^(?:(?:sd|xvd|vd|hd)[a-z]+|nvme\d+n\d+)$")
# Programs that hold a user's session or work without burning CPU: terminal multiplexers
# (a training job in a detached tmux), mosh after its handshake, an SSM Session Manager shell.
SESSION_PROGRAMS = {
    "tmux: server": "tmux",
    "screen": "screen",
    "SCREEN": "screen",
    "mosh-server": "mosh",
    "ssm-session-worker": "ssm",
}
# nvidia-smi's words for a figure a GPU does not report (utilisation under MIG, for one): the
# processes holding it, listed by the same tool, still say whether it is in use.
NOT_REPORTED = {"[N/A]", "N/A", "[Not Supported]"}
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
BENCH_CODE = re.compile(r"""run_(?:module|path)\(\s*['"](?:[^'"]*/)?bench(?:[./'"])""")


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
    max_gap: float = MAX_GAP_S
    tool_timeout: float = COMMAND_TIMEOUT_S
    net_bytes_s: float = NET_BYTES_S
    disk_bytes_s: float = DISK_BYTES_S
    net_dev: Path = Path("/proc/net/dev")
    diskstats: Path = Path("/proc/diskstats")
    jupyter_url: str = "http://127.0.0.1:8888"
    jupyter_token_file: Path = Path("/opt/dlstation/jupyter/token.env")
    # Count only processes whose environment, or an ancestor's, holds KEY=VALUE (sshd rewrites
    # its own environment with its title, so its sessions are found through their parent).
    only_env: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Config:
        ports = env.get("DLSTATION_IDLE_SSH_PORTS", "22")
        proc = env.get("DLSTATION_IDLE_PROC", "/proc")
        return cls(
            period=float(env["DLSTATION_IDLE_SECONDS"]),
            state=Path(env.get("DLSTATION_IDLE_STATE", STATE_FILE)),
            keepalive=Path(env.get("DLSTATION_KEEPALIVE_FILE", KEEPALIVE_FILE)),
            proc=Path(proc),
            ssh_ports=tuple(int(port) for port in ports.split(",") if port.strip()),
            cpu_share=float(env.get("DLSTATION_IDLE_CPU_SHARE", "0.2")),
            gpu_percent=float(env.get("DLSTATION_IDLE_GPU_PERCENT", "5")),
            max_gap=float(env.get("DLSTATION_IDLE_MAX_GAP_S", MAX_GAP_S)),
            tool_timeout=float(env.get("DLSTATION_IDLE_TOOL_TIMEOUT_S", COMMAND_TIMEOUT_S)),
            net_bytes_s=float(env.get("DLSTATION_IDLE_NET_BYTES_S", NET_BYTES_S)),
            disk_bytes_s=float(env.get("DLSTATION_IDLE_DISK_BYTES_S", DISK_BYTES_S)),
            net_dev=Path(env.get("DLSTATION_IDLE_NET_DEV", f"{proc}/net/dev")),
            diskstats=Path(env.get("DLSTATION_IDLE_DISKSTATS", f"{proc}/diskstats")),
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
    name: str  # the kernel's name for it (comm), which a user process with no argv still has
    ticks: int  # utime+stime+cutime+cstime: its own CPU and that of the children it reaped
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


def run_tool(argv: list[str], timeout: float) -> str:
    """A tool's stdout; OSError or RuntimeError saying why it gave none, within the timeout."""
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as error:
        # Killed, never waited for: one stuck in the kernel (D state), or a child of it that
        # holds the pipes open, would hang the round.
        process.kill()
        raise RuntimeError(f"{argv[0]} gave no answer in {timeout:g}s") from error
    text = out.decode(errors="replace")
    if process.returncode != 0:
        why = (err.decode(errors="replace") or text).strip()[:120]
        raise RuntimeError(f"{argv[0]} failed: {why}")
    return text


def gpu_check(r: Round) -> None:
    """Any process holding a context on a GPU, whatever its utilisation; or a GPU in use."""
    query = ["nvidia-smi", "--format=csv,noheader,nounits"]
    try:
        apps = run_tool([*query, "--query-compute-apps=pid,process_name"], r.config.tool_timeout)
        gpus = run_tool([*query, "--query-gpu=index,utilization.gpu"], r.config.tool_timeout)
    except (OSError, RuntimeError) as error:
        r.unknown("gpu", str(error))
        return
    holders = [line.strip() for line in apps.splitlines() if line.strip()]
    if holders:
        pids = ", ".join(f"pid {line.split(',')[0].strip()}" for line in holders[:3])
        r.busy.append(f"gpu: {len(holders)} process(es) on a GPU ({pids})")
    unreadable, unreported = [], []
    for line in filter(str.strip, gpus.splitlines()):
        index, _, value = (part.strip() for part in line.partition(","))
        if value in NOT_REPORTED:
            unreported.append(index)
            continue
        try:
            percent = float(value)
        except ValueError:
            percent = math.nan
        if not 0 <= percent <= 100:  # nan, or no percentage at all
            unreadable.append(line)
            continue  # the other GPUs are still read: one of them may be the busy one
        if percent >= r.config.gpu_percent:
            r.busy.append(f"gpu: GPU {index} at {percent:g}%")
    if unreported:
        gpus_text = ", ".join(unreported)
        r.notes.append(f"GPU {gpus_text}: no utilisation reported, its processes decide")
    if unreadable:
        r.unknown("gpu", f"unreadable nvidia-smi line {unreadable[0]!r}")


def read_processes(config: Config) -> dict[int, Proc]:
    """Every process under /proc, each marked whether it is in the configured scope."""
    procs = {}
    want = config.only_env.encode() if config.only_env else None
    for entry in config.proc.iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            stat = (entry / "stat").read_bytes().decode(errors="replace")  # any bytes in a name
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            in_scope = want is None or want in (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # it ended meanwhile
        fields = stat[stat.rfind(")") + 2 :].split()  # the name in (...) may hold spaces
        procs[int(entry.name)] = Proc(
            pid=int(entry.name),
            ppid=int(fields[1]),
            argv=[arg for arg in argv if arg] or [],
            name=stat[stat.find("(") + 1 : stat.rfind(")")],
            ticks=sum(int(value) for value in fields[11:15]),
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
    """dlbench, python [options] -m bench[.x], python [options] .../bench/x.py, runpy on bench.

    Any argument is looked at, not only the script's place: one that merely names a bench file
    keeps the machine up too, which is the safe side."""
    module = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-m"), None)
    module = module or next((arg[2:] for arg in argv if arg.startswith("-m")), "")
    if module == "bench" or module.startswith("bench."):
        return True
    return any(BENCH.search(arg) or BENCH_CODE.search(arg) for arg in argv)


def elapsed(r: Round, key: str) -> float | None:
    """Seconds since the last round's sample, None for the first sample (or a clock behind it)."""
    at = r.old.get(key)
    r.new[key] = r.now
    return r.now - at if at is not None and r.now > at else None


def classify(procs: dict[int, Proc], proc: Proc) -> tuple[str, str]:
    """("ssh" or "session", "what (pid N)"), ("ansible", ""), ("bench", ""); ("", "") if none."""
    program = SESSION_PROGRAMS.get(proc.name) or (
        SESSION_PROGRAMS.get(Path(proc.argv[0]).name) if proc.argv else None
    )
    if match := SSH_SESSION.match(" ".join(proc.argv).strip()):
        return "ssh", f"{match.group(1)}{match.group(2) or ''} (pid {proc.pid})"
    if program:
        return "session", f"{program} (pid {proc.pid})"
    if any(ANSIBLE.search(arg) for p in lineage(procs, proc) for arg in p.argv):
        return "ansible", ""
    if is_bench(proc.argv):
        return "bench", ""
    return "", ""


def process_check(r: Round) -> None:
    """SSH and other sessions, Ansible and bench processes, and CPU used since the last round."""
    try:
        r.procs = read_processes(r.config)
    except OSError as error:
        r.unknown("processes", f"cannot list {r.config.proc}: {error}")
        return
    found: dict[str, list[str]] = {"ssh": [], "session": [], "ansible": [], "bench": [], "": []}
    shares = []
    previous = r.old.get("cpu")
    seconds = elapsed(r, "cpu_at")
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    r.new["cpu"] = {}
    total = 0
    for proc in r.procs.values():
        if not proc.in_scope or proc.kthread:
            continue
        kind, what = classify(r.procs, proc)
        found[kind].append(what or f"pid {proc.pid}")
        key = f"{proc.pid}:{proc.start}"  # a reused pid is another process
        r.new["cpu"][key] = proc.ticks
        if previous is None:
            continue  # the first sample: nothing to compare with
        # One seen last round: what it (and the children it reaped) used since; one started
        # since: all of it, so work shorter than a round still counts.
        used = proc.ticks - previous.get(key, 0)
        if used > 0:
            total += used
            shares.append((used, proc))
    if seconds and total / ticks_per_s / seconds > r.config.cpu_share:
        shares.sort(key=lambda item: -item[0])
        top = ", ".join(
            f"pid {p.pid} {Path(p.argv[0]).name if p.argv else p.name} at "
            f"{used / ticks_per_s / seconds:.0%}"
            for used, p in shares[:3]
        )
        r.busy.append(f"cpu: {top} of a core; {total / ticks_per_s / seconds:.0%} in all")
    if sessions := found["ssh"]:
        r.busy.append(f"ssh: {len(sessions)} session process(es): {', '.join(sessions[:3])}")
    if found["session"]:
        r.busy.append(f"session: {', '.join(found['session'][:3])}")
    for kind in ("ansible", "bench"):
        if pids := sorted(found[kind], key=lambda text: int(text.split()[1])):
            r.busy.append(f"{kind}: {len(pids)} process(es) ({pids[0]})")


def counters(path: Path, parse: Callable[[list[str]], int | None]) -> int:
    """The sum of one counter over a /proc table's lines; ValueError for a line it cannot read."""
    total = 0
    for line in path.read_text().splitlines():
        value = parse(line.replace(":", " ", 1).split())
        total += value or 0
    return total


def net_bytes(fields: list[str]) -> int | None:
    """Received + sent bytes of one /proc/net/dev interface line; loopback and headers: None."""
    if len(fields) < 10 or not fields[1].isdigit() or fields[0] == "lo":
        return None
    return int(fields[1]) + int(fields[9])


def disk_bytes(fields: list[str]) -> int | None:
    """Read + written bytes of one whole disk in /proc/diskstats (sectors are 512 bytes)."""
    if len(fields) < 10 or not WHOLE_DISK.match(fields[2]):
        return None
    return (int(fields[5]) + int(fields[9])) * 512


def io_check(r: Round) -> None:
    """Network bytes on non-loopback interfaces and disk bytes since the last round: a download
    or a copy uses the machine without burning CPU."""
    for check, path, parse, limit in (
        ("network", r.config.net_dev, net_bytes, r.config.net_bytes_s),
        ("disk", r.config.diskstats, disk_bytes, r.config.disk_bytes_s),
    ):
        try:
            count = counters(path, parse)
        except (OSError, ValueError) as error:
            r.unknown(check, f"cannot read {path}: {error}")
            continue
        before = r.old.get(check)
        r.new[check] = count
        seconds = elapsed(r, f"{check}_at")
        if before is None or not seconds or count < before:
            continue  # a first sample, or counters reset
        rate = (count - before) / seconds
        if rate > limit:
            r.busy.append(f"{check}: {rate / 1e6:.1f} MB/s (more than {limit / 1e6:g} MB/s)")


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


def fetch_kernels(config: Config, token: str | None) -> list[Any] | str:
    """GET /api/kernels: the kernels, or why they could not be read."""
    request = urllib.request.Request(f"{config.jupyter_url}/api/kernels")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=config.tool_timeout) as response:
            kernels = json.loads(response.read())
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError) and token is None:
            return []  # no JupyterLab installed, none listening: no kernel can be busy
        return f"/api/kernels: {error}"
    except (OSError, ValueError) as error:
        return f"/api/kernels: {error}"
    if not isinstance(kernels, list) or not all(isinstance(k, dict) for k in kernels):
        return f"/api/kernels answered {json.dumps(kernels)[:60]}, not a list of kernels"
    return kernels


def read_kernels(config: Config) -> list[Any] | str:
    """The kernels JupyterLab reports, or why not, within the tool timeout in all: urlopen's
    timeout is per read, and a server that trickles bytes would hold the round forever."""
    try:
        token = jupyter_token(config.jupyter_token_file)
    except (OSError, UnicodeDecodeError) as error:
        return f"cannot read the token: {error}"
    answer: list[list[Any] | str] = []
    worker = threading.Thread(
        target=lambda: answer.append(fetch_kernels(config, token)), daemon=True
    )
    worker.start()
    worker.join(config.tool_timeout)
    return answer[0] if answer else f"/api/kernels gave no answer in {config.tool_timeout:g}s"


# Jupyter's execution states: those that are work, and those that are not.
KERNEL_BUSY = {"busy", "starting", "restarting", "autorestarting"}
KERNEL_IDLE = {"idle", "dead"}


def jupyter_check(r: Round) -> None:
    """A busy kernel; otherwise each kernel's last activity, on the boot clock."""
    kernels = read_kernels(r.config)
    if isinstance(kernels, str):
        r.unknown("jupyter", kernels)
        return
    seen = r.old.get("kernels", {})
    r.new["kernels"] = {}
    for kernel in kernels:
        name = str(kernel.get("id", "?"))[:40]
        state = kernel.get("execution_state")
        if state in KERNEL_BUSY:
            r.busy.append(f"jupyter: kernel {name} is {state}")
        elif state not in KERNEL_IDLE:
            r.unknown("jupyter", f"kernel {name} execution_state {json.dumps(state)[:40]}")
        text = kernel.get("last_activity")
        stamp = parse_stamp(text)
        if stamp is None:
            r.unknown("jupyter", f"kernel {name} last_activity {json.dumps(text)[:40]}")
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
    """A keep-alive the user set (`keepalive 2h`): busy until it expires, 7 days at most."""
    try:
        text = r.config.keepalive.read_text(errors="replace")
    except FileNotFoundError:
        return
    except OSError as error:
        r.unknown("keep-alive", f"cannot read {r.config.keepalive}: {error}")
        return
    try:
        until = float(text.split()[0])
    except (IndexError, ValueError):
        until = math.nan
    if not math.isfinite(until):
        r.unknown("keep-alive", f"{r.config.keepalive} holds no expiry")
        return
    if until - r.now > MAX_KEEPALIVE_S:  # e.g. a wall-clock epoch written by hand
        old = r.old.get("keepalive")
        first = old[1] if old and old[0] == text else r.now
        r.new["keepalive"] = [text, first]
        until = first + MAX_KEEPALIVE_S
        r.notes.append(f"keep-alive {text.split()[0]} is beyond 7d, held for 7d from when seen")
    if until > r.now:
        r.busy.append(f"keep-alive: {span(until - r.now)} left")


CHECKS = (keepalive_check, gpu_check, process_check, connection_check, io_check, jupyter_check)


def number(value: object, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def valid_state(state: object, now: float) -> str | None:
    """What is wrong with a saved state, None if nothing: every field is checked, since a bad
    one could power off at once, or blind a check forever."""
    if not isinstance(state, dict):
        return "not an object"
    for key in ("idle_since", "seen_at"):
        if not number(state.get(key), 0, now):
            return f"{key} {json.dumps(state.get(key))[:40]}"
    for key in ("cpu_at", "network_at", "disk_at", "network", "disk"):
        if key in state and not number(state[key], 0, math.inf):
            return f"{key} {json.dumps(state[key])[:40]}"
    tables: dict[str, Callable[[Any], bool]] = {
        "cpu": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "unknown": lambda v: number(v, 0, now),
        "kernels": lambda v: isinstance(v, list) and len(v) == 2 and number(v[1], 0, now),
    }
    for key, ok in tables.items():
        table = state.get(key, {})
        if not isinstance(table, dict) or not all(ok(value) for value in table.values()):
            return f"{key} malformed"
    keep = state.get("keepalive", ["", 0])
    if not (isinstance(keep, list) and len(keep) == 2 and number(keep[1], 0, now)):
        return "keepalive malformed"
    return None


def load_state(path: Path, now: float) -> tuple[dict[str, Any], str | None]:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as error:
        return {}, f"state {path} unreadable ({error}); counting from now"
    seen = state.get("seen_at") if isinstance(state, dict) else None
    if isinstance(seen, (int, float)) and seen > now:  # a boot clock behind the state: a new boot
        return {}, "state from another boot; counting from now"
    if problem := valid_state(state, now):
        return {}, f"state {path} unreadable ({problem}); counting from now"
    assert isinstance(state, dict)
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
    r.new["seen_at"] = now
    if r.busy:
        r.new["idle_since"] = now
        line = f"{PREFIX} busy, idle 0m of {limit}: {'; '.join(r.busy)}"
        off = False
    else:
        since = float(old.get("idle_since", now))
        gap = now - float(old.get("seen_at", now))
        if gap > config.max_gap:  # no round watched that time (a hung round, a stopped timer)
            since += gap - config.max_gap
            r.notes.append(f"no round for {span(gap)}, counted as {span(config.max_gap)} idle")
        since = min(max([since, *r.activity]), now)
        r.new["idle_since"] = since
        off = now - since >= config.period
        line = f"{PREFIX} idle {span(now - since)} of {limit}: nothing in use"
        line += "; powering off" if off else ""
    if r.notes:
        line += f" (note: {'; '.join(r.notes)})"
    r.new["last"] = line
    try:
        save_state(config.state, r.new)
    except OSError as error:  # the next round's gap cap keeps this round's time from counting
        return False, f"{PREFIX} busy, idle 0m of {limit}: state: cannot save ({error})"
    return off, line


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise ValueError(f"{text!r}: write e.g. 90m, 2h or 1d, or off")
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    if seconds > MAX_KEEPALIVE_S:
        raise ValueError(f"{text!r}: 7d at most (the longest TTL)")
    return seconds


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
        with contextlib.suppress(Exception):  # busy now, so the next round counts from here
            now = clock.boot()
            save_state(config.state, {"idle_since": now, "seen_at": now})
        return 0
    print(line, flush=True)
    if not off:
        return 0
    command = shlex.split(env.get("DLSTATION_IDLE_POWEROFF", "systemctl poweroff"))
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
