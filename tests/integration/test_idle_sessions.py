"""The idle watchdog against real process trees: a real sshd on 127.0.0.1 (its own host key and
config, key login for root to itself), real ssh sessions and tunnels, real ansible-playbook runs
over that SSH sampled while they run, a detached busy loop, a real `python -m bench`.

The sshd hands every session this module's marker (SetEnv), so the watchdog counts exactly the
processes these tests start; the baseline test proves that with all of it in place, nothing
started, the watchdog says idle.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, SSHD, free_port
from tests.fakes.idle import Box, held_start_env, idle_box, new_marker

pytestmark = [pytest.mark.sshd, pytest.mark.slow]  # the module takes minutes on two cores
WAIT_S = 120.0  # generous: CI is two busy cores


def wait_for(what: str, condition: Callable[[], object], timeout: float = WAIT_S) -> None:
    """Until condition() is true (an event: a file, a line, a process state), or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, title) of the processes whose parent is pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                found.append((int(entry.name), title))
    return found


def established(port: int) -> int:
    hex_port = f":{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        1 for line in lines if line.split()[1].endswith(hex_port) and line.split()[3] == "01"
    )


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@dataclass
class Sshd:
    listener: int
    port: int
    key: Path
    log: Path
    marker: str

    def ssh(self, *args: str) -> list[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.key),
            "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            *args,
            "root@127.0.0.1",
        ]

    def sessions(self) -> list[str]:
        """Titles of the listener's children once a login went through."""
        return [title for _, title in children(self.listener) if title.startswith("sshd: root")]

    def quiet(self) -> bool:
        return not self.sessions() and established(self.port) == 0


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
        )
    (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
    marker = new_marker()
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPidFile none\nAllowTcpForwarding yes\n"
        "Subsystem sftp /usr/lib/openssh/sftp-server\n"
        f"SetEnv {marker}\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = root / "sshd.log"
    key, _, value = marker.partition("=")
    # Under a parent shell that holds the marker: sshd overwrites its own environment with its
    # process title, so the watchdog finds sshd and its sessions as that shell's descendants.
    with log.open("wb") as sink:
        parent = subprocess.Popen(
            ["sh", "-c", '"$@"; exit $?', "sh", str(SSHD), "-D", "-e", "-f", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, key: value},
            start_new_session=True,
        )
    try:
        wait_for("sshd listening", lambda: "Server listening" in log.read_text() or parent.poll())
        assert parent.poll() is None, log.read_text()
        (listener,) = [pid for pid, _ in children(parent.pid)]
        yield Sshd(listener, port, root / "user_key", log, marker)
    finally:
        os.killpg(parent.pid, signal.SIGTERM)
        parent.wait(timeout=60)


@pytest.fixture
def box(tmp_path: Path, sshd: Sshd) -> Iterator[Box]:
    with idle_box(tmp_path, ssh_port=sshd.port, marker=sshd.marker) as fake:
        yield fake


@contextlib.contextmanager
def background(argv: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=60)


def assert_idle(box: Box, minutes: float) -> None:
    powered, line = box.run(minutes)
    assert not powered and line.startswith("dlstation-idle: idle "), line


def test_the_baseline_with_sshd_listening_is_idle(box: Box, sshd: Sshd) -> None:
    assert sshd.quiet()
    assert_idle(box, 0)
    assert_idle(box, 0.5)
    assert box.run(31) == (True, "dlstation-idle: idle 31m of 30m: nothing in use; powering off")


@pytest.mark.parametrize(
    ("options", "remote", "title"),
    [(["-N"], [], "root"), (["-tt"], ["sleep 600"], "root@pts/")],
    ids=["ssh -N", "a terminal"],
)
def test_an_ssh_session_with_or_without_a_terminal_keeps_it_up(
    box: Box, sshd: Sshd, options: list[str], remote: list[str], title: str
) -> None:
    assert_idle(box, 0)
    with background([*sshd.ssh(*options), *remote], stderr=subprocess.PIPE):
        wait_for("the login", lambda: any(t.startswith(f"sshd: {title}") for t in sshd.sessions()))
        powered, line = box.run(40)
        assert not powered and line.startswith("dlstation-idle: busy, idle 0m of 30m: ")
        assert f"ssh: 1 session process(es): {title}" in line, line
        assert f"ssh: 1 connection(s) to port {sshd.port}" in line, line
    wait_for("the session to end", sshd.quiet)
    assert_idle(box, 41)
    assert box.run(69)[0] is False and box.run(70)[0] is True


def test_a_jupyter_tunnel_keeps_it_up(box: Box, sshd: Sshd) -> None:
    """The `ssh -N -L` dlcloud prints for JupyterLab, a notebook open and no cell running."""
    jupyter = box.env["DLSTATION_JUPYTER_URL"].rsplit(":", 1)[1]
    local = free_port()
    forward = f"{local}:127.0.0.1:{jupyter}"
    with background(sshd.ssh("-N", "-L", forward), stderr=subprocess.PIPE):

        def tunnel_answers() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{local}/api/kernels", timeout=5)
            except urllib.error.HTTPError as error:
                return error.code == 403  # the fake JupyterLab behind the tunnel answered
            except OSError:
                return False
            return False

        wait_for("the tunnel to reach JupyterLab", tunnel_answers)
        powered, line = box.run(40)
        assert not powered
        assert "ssh: 1 session process(es): root" in line, line
        assert f"ssh: 1 connection(s) to port {sshd.port}" in line, line
    wait_for("the tunnel to close", sshd.quiet)
    assert_idle(box, 41)


def test_a_detached_busy_loop_keeps_it_up_after_logout(box: Box, sshd: Sshd) -> None:
    """`nohup python3 -c <busy loop> &`, then the session ends: CPU use is the only sign."""
    start = "nohup python3 -c 'while True: pass' </dev/null >/dev/null 2>&1 & echo $!"
    done = subprocess.run(
        [*sshd.ssh(), start], capture_output=True, text=True, timeout=WAIT_S, check=True
    )
    pid = int(done.stdout.strip())
    try:
        wait_for("the session to end", sshd.quiet)
        assert_idle(box, 0)  # the first sample of its CPU time
        first = cpu_ticks(pid)
        wait_for("half a second of CPU", lambda: cpu_ticks(pid) >= first + 50)
        powered, line = box.run(1 / 60)  # one second later on the (controlled) boot clock
        assert not powered
        assert line.startswith(f"dlstation-idle: busy, idle 0m of 30m: cpu: pid {pid} python3")
        assert "ssh" not in line
    finally:
        os.kill(pid, signal.SIGKILL)
    assert_idle(box, 2 / 60)


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "bench"],
        [sys.executable, str(Path(sys.executable).parent / "dlbench")],
        [sys.executable, str(REPO / "bench" / "__main__.py")],
    ],
    ids=["python -m bench", "dlbench", "python bench/__main__.py"],
)
def test_a_bench_process_keeps_it_up(box: Box, tmp_path: Path, argv: list[str]) -> None:
    """A real bench process, held at startup (its argv in place) until it has been sampled."""
    env, fifo = held_start_env(tmp_path, box.scoped_env(dict(os.environ)))
    assert_idle(box, 0)
    with background([*argv, "--help"], cwd=REPO, env=env) as bench:
        held: list[int] = []

        def reading() -> bool:
            try:
                held.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as error:
                assert error.errno == errno.ENXIO, error  # no reader yet
                return False
            return True

        wait_for("bench to open the FIFO", reading)
        powered, line = box.run(40)
        os.close(held[0])
        assert not powered and f"bench: 1 process(es) (pid {bench.pid})" in line, line
    assert_idle(box, 41)


PLAYBOOK = """- hosts: box
  gather_facts: false
  tasks:
    - name: Wait, as a pip install would, until the test has looked
      ansible.builtin.shell: "touch {started}; until [ -e {go} ]; do sleep 0.1; done"
      changed_when: false
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "shape",
    [("ssh", True, False), ("ssh", False, False), ("ssh", True, True), ("local", True, False)],
    ids=[
        "over ssh, pipelining",
        "over ssh, no pipelining",
        "over ssh, pipelining, become",
        "on the instance itself",
    ],
)
def test_an_ansible_run_keeps_it_up(
    box: Box, sshd: Sshd, tmp_path: Path, shape: tuple[str, bool, bool]
) -> None:
    """setup.yml run from the user's machine over SSH, or on the instance (local connection)."""
    connection, pipelining, become = shape
    started, go = tmp_path / "started", tmp_path / "go"
    (tmp_path / "playbook.yml").write_text(PLAYBOOK.format(started=started, go=go))
    (tmp_path / "inventory.ini").write_text(
        f"box ansible_host=127.0.0.1 ansible_port={sshd.port} ansible_user=root "
        f"ansible_ssh_private_key_file={sshd.key} ansible_python_interpreter=/usr/bin/python3 "
        f"ansible_connection={connection} ansible_become={become}\n"
    )
    (tmp_path / "ansible.cfg").write_text(
        "[defaults]\nhost_key_checking = False\n"
        f"[ssh_connection]\npipelining = {pipelining}\n"
        "ssh_args = -F /dev/null -o ControlMaster=no -o UserKnownHostsFile=/dev/null\n"
    )
    # Over SSH only the host's side is the instance's; run locally, all of it is.
    base = dict(os.environ) if connection == "ssh" else box.scoped_env(dict(os.environ))
    env = {**base, "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg")}
    assert_idle(box, 0)
    playbook = Path(sys.executable).parent / "ansible-playbook"
    command = [str(playbook), "-i", "inventory.ini", "playbook.yml"]
    with background(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE) as run:
        wait_for("the task to start on the host", lambda: started.exists() or run.poll())
        assert run.poll() is None, run.stdout.read() if run.stdout else ""
        powered, line = box.run(40)
        go.touch()
        assert run.wait(timeout=WAIT_S) == 0, run.stdout.read() if run.stdout else ""
    assert not powered and "ansible: " in line, line
    assert ("ssh: " in line) == (connection == "ssh"), line
    wait_for("the SSH connection to close", sshd.quiet)
    assert_idle(box, 41)


def test_a_bench_training_worker_keeps_it_up(box: Box) -> None:
    """`python -m bench.training.worker` as the runner starts it, held by a full event pipe:
    every path through the worker reports an event before it exits, so it is alive here."""
    from bench.training.process import EVENT_FD_ENV

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"x" * 65536)
    os.set_blocking(write_end, True)
    env = {**box.scoped_env(dict(os.environ)), EVENT_FD_ENV: str(write_end)}
    assert_idle(box, 0)
    argv = [sys.executable, "-m", "bench.training.worker", "{}"]
    with background(argv, cwd=REPO, env=env, pass_fds=(write_end,)) as worker:
        os.close(write_end)
        powered, line = box.run(40)
        os.close(read_end)  # the worker's next write fails: it ends
        assert worker.wait(timeout=WAIT_S) != 0
    assert not powered and f"bench: 1 process(es) (pid {worker.pid})" in line, line
    assert_idle(box, 41)


ASYNC_PLAYBOOK = """- hosts: box
  gather_facts: false
  tasks:
    - name: Fire and forget, as a long pip install may be run
      ansible.builtin.shell: "touch {started}; until [ -e {go} ]; do sleep 0.1; done"
      async: 600
      poll: 0
      changed_when: false
"""

PAUSE_PLAYBOOK = """- hosts: box
  gather_facts: false
  tasks:
    - name: Wait on the controller, no module running anywhere
      ansible.builtin.pause:
        seconds: 600
"""


def ansible_files(tmp_path: Path, sshd: Sshd, playbook: str, connection: str) -> None:
    (tmp_path / "playbook.yml").write_text(playbook)
    (tmp_path / "inventory.ini").write_text(
        f"box ansible_host=127.0.0.1 ansible_port={sshd.port} ansible_user=root "
        f"ansible_ssh_private_key_file={sshd.key} ansible_python_interpreter=/usr/bin/python3 "
        f"ansible_connection={connection}\n"
    )
    (tmp_path / "ansible.cfg").write_text(
        "[defaults]\nhost_key_checking = False\n"
        "[ssh_connection]\n"
        "ssh_args = -F /dev/null -o ControlMaster=no -o UserKnownHostsFile=/dev/null\n"
    )


@pytest.mark.slow
def test_an_async_ansible_task_keeps_it_up_after_the_run_ended(
    box: Box, sshd: Sshd, tmp_path: Path
) -> None:
    """`async` + `poll: 0`: the module runs on, detached, after ansible-playbook and SSH left."""
    started, go = tmp_path / "started", tmp_path / "go"
    ansible_files(tmp_path, sshd, ASYNC_PLAYBOOK.format(started=started, go=go), "ssh")
    env = {**os.environ, "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg")}
    playbook = Path(sys.executable).parent / "ansible-playbook"
    assert_idle(box, 0)
    try:
        done = subprocess.run(
            [str(playbook), "-i", "inventory.ini", "playbook.yml"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for("the task to start on the host", started.exists)
        wait_for("the SSH connection to close", sshd.quiet)
        powered, line = box.run(40)
        assert not powered and "ansible: " in line and "ssh" not in line, line
    finally:
        go.touch()
    wait_for("the task to end", lambda: box.run(41)[1].startswith("dlstation-idle: idle "))


@pytest.mark.slow
def test_ansible_playbook_between_tasks_keeps_it_up(box: Box, sshd: Sshd, tmp_path: Path) -> None:
    """setup.yml run on the instance, at a moment no module runs (a pause on the controller)."""
    ansible_files(tmp_path, sshd, PAUSE_PLAYBOOK, "local")
    env = {**box.scoped_env(dict(os.environ)), "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg")}
    playbook = Path(sys.executable).parent / "ansible-playbook"
    command = [str(playbook), "-i", "inventory.ini", "playbook.yml"]
    assert_idle(box, 0)
    with background(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE) as run:
        out = run.stdout
        assert out is not None
        wait_for("the pause", lambda: b"Pausing for 600 seconds" in (out.readline() or b"x"))
        powered, line = box.run(40)
        run.terminate()
    assert not powered, line
    assert "ansible: " in line and "ssh" not in line, line
    assert_idle(box, 41)
