"""What the idle watchdog makes of a process table, read from a /proc tree the test writes:
SSH sessions by sshd's titles, Ansible by an ancestor's command line, kernel threads and
processes out of scope left out. The real-sshd tests show the same on live processes; these
pin each branch of the decision in a second."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.idle import watchdog_module

WATCHDOG = watchdog_module()
TICKS = os.sysconf("SC_CLK_TCK")
ANSIBLE_SHELL = "/usr/bin/python3 && sleep 0"  # the -c of the shell around a module


@dataclass
class ProcTree:
    """A /proc as read_processes reads it: stat, cmdline and environ per pid."""

    root: Path
    marker: str = "DLSTATION_IDLE_TEST=1"

    def add(
        self,
        pid: int,
        argv: list[str],
        *,
        ppid: int = 1,
        name: str = "proc",
        ticks: int = 0,
        kthread: bool = False,
        in_scope: bool = True,
    ) -> None:
        entry = self.root / str(pid)
        entry.mkdir(exist_ok=True)
        flags = WATCHDOG.PF_KTHREAD if kthread else 0
        # After "pid (name) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
        # cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime
        rest = ["S", ppid, 0, 0, 0, 0, flags, 0, 0, 0, 0, ticks, 0, 0, 0, 20, 0, 1, 0, 100 + pid]
        (entry / "stat").write_text(f"{pid} ({name}) {' '.join(map(str, rest))}\n")
        (entry / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))
        (entry / "environ").write_bytes(self.marker.encode() + b"\0" if in_scope else b"A=1\0")

    def config(self) -> Any:
        return WATCHDOG.Config(period=1800.0, proc=self.root, only_env=self.marker)

    def round(self, now: float = 1000.0, old: dict[str, Any] | None = None) -> Any:
        """One process_check on this tree; the Round it leaves."""
        r = WATCHDOG.Round(self.config(), now, now, old or {})
        WATCHDOG.process_check(r)
        return r


@pytest.fixture
def tree(tmp_path: Path) -> ProcTree:
    proc = ProcTree(tmp_path / "proc")
    proc.root.mkdir()
    proc.add(1, ["/sbin/init"], ppid=0, name="init", in_scope=False)  # as on a real box
    return proc


def one(tree: ProcTree, pid: int) -> tuple[str, str]:
    procs = WATCHDOG.read_processes(tree.config())
    return WATCHDOG.classify(procs, procs[pid])


@pytest.mark.parametrize(
    ("title", "what"),
    [
        ("sshd: ubuntu@pts/0", "ubuntu@pts/0 (pid 40)"),
        ("sshd: ubuntu@notty", "ubuntu@notty (pid 40)"),
        ("sshd: ubuntu [priv]", "ubuntu (pid 40)"),
        ("sshd-session: ubuntu", "ubuntu (pid 40)"),
    ],
)
def test_each_sshd_session_title_is_an_ssh_session(tree: ProcTree, title: str, what: str) -> None:
    tree.add(40, [title], name="sshd")
    assert one(tree, 40) == ("ssh", what)


@pytest.mark.parametrize(
    "title",
    ["sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", "sshd: ubuntu [preauth]"],
)
def test_the_listener_and_a_login_in_progress_are_not_sessions(tree: ProcTree, title: str) -> None:
    tree.add(40, [title], name="sshd")
    assert one(tree, 40) == ("", "")


def test_an_ssh_title_wins_over_the_program_name(tree: ProcTree) -> None:
    """A session whose kernel name is a multiplexer's is still counted as the SSH session it is."""
    tree.add(40, ["sshd: ubuntu@pts/1"], name="screen")
    assert one(tree, 40) == ("ssh", "ubuntu@pts/1 (pid 40)")


def test_a_module_under_an_ansible_shell_is_ansible(tree: ProcTree) -> None:
    """Only the shell around the module names Ansible: its child, python3 reading the module on
    stdin, is found through its ancestry."""
    tree.add(50, ["/bin/sh", "-c", ANSIBLE_SHELL], name="sh")
    tree.add(51, ["/usr/bin/python3"], ppid=50, name="python3")
    tree.add(52, ["/usr/bin/python3"], name="python3")
    assert one(tree, 51) == ("ansible", "")
    assert one(tree, 52) == ("", "")


def test_an_ssh_session_is_a_busy_reason_with_its_user(tree: ProcTree) -> None:
    tree.add(40, ["sshd: ubuntu@pts/0"], name="sshd")
    busy = tree.round().busy
    assert busy == ["ssh: 1 session process(es): ubuntu@pts/0 (pid 40)"], busy


def test_an_ansible_run_is_a_busy_reason(tree: ProcTree) -> None:
    tree.add(50, ["/bin/sh", "-c", ANSIBLE_SHELL], name="sh")
    tree.add(51, ["/usr/bin/python3"], ppid=50, name="python3")
    assert tree.round().busy == ["ansible: 2 process(es) (pid 50)"]


def test_out_of_scope_processes_and_kernel_threads_are_not_counted(tree: ProcTree) -> None:
    """Neither a session out of scope nor a kernel thread busy on a core keeps the box up."""
    tree.add(40, ["sshd: ubuntu@pts/0"], name="sshd", in_scope=False)
    tree.add(60, [], name="kworker/0:1", kthread=True)
    first = tree.round(now=1000.0)
    assert first.busy == [], first.busy
    tree.add(60, [], name="kworker/0:1", kthread=True, ticks=60 * TICKS)
    second = tree.round(now=1060.0, old=first.new)
    assert second.busy == [], second.busy


def test_a_process_in_scope_busy_on_a_core_is_counted(tree: ProcTree) -> None:
    """The counterpart of the kernel thread above: the same ticks in a user process count."""
    tree.add(60, ["python3", "train.py"], name="python3")
    first = tree.round(now=1000.0)
    tree.add(60, ["python3", "train.py"], name="python3", ticks=60 * TICKS)
    busy = tree.round(now=1060.0, old=first.new).busy
    assert busy == ["cpu: pid 60 python3 at 100% of a core; 100% in all"], busy


def test_a_round_that_cannot_list_processes_leaves_no_cpu_sample(tree: ProcTree) -> None:
    """It cannot tell, so it is busy; and the round after starts a fresh sample instead of
    counting all the CPU a long-lived process ever used as used since."""
    tree.add(60, ["jupyter-lab"], name="jupyter-lab", ticks=3600 * TICKS)
    hidden = tree.root.with_name("hidden")
    tree.root.rename(hidden)
    blind = tree.round(now=1000.0)
    hidden.rename(tree.root)
    assert [reason.split(" (")[0] for reason in blind.busy] == ["processes: cannot tell for 0m"]
    assert tree.round(now=1060.0, old=blind.new).busy == []
