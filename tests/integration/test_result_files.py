"""Result files under concurrency, full disks and signals: none lost, clobbered or left half.

Real runs of the real executable, started together on an event (a line on a FIFO), a real
small tmpfs filled before and during a run, a real SIGTERM inside the result write.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from bench.results import document as results
from bench.results import output
from bench.training import data
from bench.training.progress import Progress
from bench.training.runner import Runner, new_document, short_check_plan
from tests.conftest import REPO
from tests.harness.runs import dlbench_argv, run_captured, start, wait_for_epochs

# One short real run: Reuters' model on synthetic data, JAX (the quickest backend to start).
SHORT = ["run", "reuters", "--synthetic", "--backend", "jax", "--no-imds"]
SHORT += ["--telemetry-interval", "0"]


def leftovers(folder: Path) -> list[str]:
    """Temp files of any writer of ours (results, reports, caches) under folder."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.endswith(".tmp") or p.name.startswith(".report-")
    )


def seeded_run(seed: int, *where: str, cache: Path) -> list[str]:
    """A two-epoch SHORT run with this seed and encode cache, writing where `where` says."""
    return dlbench_argv(*SHORT, "--epochs", "2", "--seed", str(seed), *where, cache=cache)


def start_together(commands: list[list[str]], fifo: Path) -> list[subprocess.Popen[str]]:
    """Start every command at once: each waits for its line on a FIFO, sent when all wait."""
    os.mkfifo(fifo)
    # Held open for writing, so the children's opens do not block and no line is lost.
    gate = os.open(fifo, os.O_RDWR)
    processes = [
        subprocess.Popen(
            ["sh", "-c", 'read _ < "$0" && exec "$@"', str(fifo), *command],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    deadline = time.monotonic() + 60
    # Each is at its `read` once the FIFO is its stdin.
    waiting: set[int] = set()
    while len(waiting) < len(processes):
        assert time.monotonic() < deadline, "the children never reached the gate"
        for process in processes:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{process.pid}/fd/0").readlink() == fifo:
                    waiting.add(process.pid)
        time.sleep(0.01)
    os.write(gate, b"\n" * len(processes))
    for process in processes:
        process.wait(timeout=600)
    os.close(gate)
    return processes


@pytest.mark.root
def test_a_device_as_output_is_refused_and_left_untouched(tmp_path: Path) -> None:
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # Never the system's /dev/null: a regression would replace it. A device of our own instead.
    for target in (device, fifo):
        before = os.lstat(target)
        done = run_captured(
            dlbench_argv(*SHORT, "--epochs", "1", "--output", str(target)),
            timeout=300,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"dlbench: error: --output {target} exists and is not a regular file (a device, "
            "FIFO or link); dlbench never replaces it: pass a new file path"
        ]
        after = os.lstat(target)
        assert (after.st_mode, after.st_rdev, after.st_ino) == (
            before.st_mode,
            before.st_rdev,
            before.st_ino,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null"]


def refused_output(target: Path) -> subprocess.CompletedProcess[str]:
    return run_captured(
        dlbench_argv(*SHORT, "--epochs", "1", "--output", str(target)),
        timeout=300,
    )


def test_a_link_as_output_is_refused_and_its_target_left_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    link = tmp_path / "link.json"
    link.symlink_to(victim.name)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "elsewhere.json")
    for target in (link, dangling):
        done = refused_output(target)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"dlbench: error: --output {target} exists and is not a regular file (a device, "
            "FIFO or link); dlbench never replaces it: pass a new file path"
        ]
    assert victim.read_text() == "root:x:0:0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.json", "link.json", "passwd"]


def test_a_file_that_is_not_a_dlbench_result_is_never_replaced(tmp_path: Path) -> None:
    notes = tmp_path / "notes.json"
    for text in ("my notes\n", '{"tool": "other"}\n'):
        notes.write_text(text)
        done = refused_output(notes)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"dlbench: error: --output {notes} exists and is not a dlbench result; dlbench "
            "never replaces it: pass a new file path"
        ]
        assert notes.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json"]


def test_an_earlier_result_or_an_empty_file_may_be_claimed_again(tmp_path: Path) -> None:
    earlier = tmp_path / "r.json"
    earlier.write_text((REPO / "tests/data/results/fixture-cpu-b.json").read_text())
    assert output.claim(earlier, unique=False) == earlier
    empty = tmp_path / "e.json"
    empty.touch()
    assert output.claim(empty, unique=False) == empty


def test_a_claimed_file_is_valid_json_from_its_first_moment(tmp_path: Path) -> None:
    for unique in (True, False):
        claimed = output.claim(tmp_path / f"r-{unique}.json", unique=unique)
        assert json.loads(claimed.read_text())["incomplete_reason"] == "starting"
        with pytest.raises(results.ResultError, match="stopped before its first write"):
            results.load(claimed)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_just_after_the_claim_leaves_no_blank_file_and_no_lock(
    tmp_path: Path, signum: int
) -> None:
    target = tmp_path / "r.json"
    process = subprocess.Popen(
        dlbench_argv(*SHORT, "--epochs", "1", "--output", str(target)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + 120
    while not os.path.lexists(target):  # the event: the claim
        assert process.poll() is None and time.monotonic() < deadline, process.stderr
        time.sleep(0.001)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    if target.exists():
        json.loads(target.read_text())  # a result, or what it was at the stop: never blank
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "r.json") == []


def test_a_hard_link_planted_at_the_lock_is_refused_and_left_whole(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    target = tmp_path / "r.json"
    os.link(precious, output.lock_path(target))
    with pytest.raises(output.OutputError, match="not a lock dlbench made"):
        output.claim(target, unique=False)
    assert precious.read_text() == "keep me\n"
    assert not target.exists()


def test_claims_racing_in_threads_each_get_their_own_name(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    name = tmp_path / "dlbench-vm-jax-fit-20261201T000000Z.json"
    with ThreadPoolExecutor(8) as pool:
        claimed = list(pool.map(lambda _: output.claim(name, unique=True), range(16)))
    assert len(set(claimed)) == 16
    assert claimed[0].parent == tmp_path and all(p.is_file() for p in claimed)


@pytest.mark.slow
def test_runs_started_together_into_one_folder_each_keep_their_result(tmp_path: Path) -> None:
    """Default names: three runs in the same second each get a file, each its own seed."""
    out = tmp_path / "out"
    commands = [seeded_run(seed, "--out", str(out), cache=tmp_path / "cache") for seed in (1, 2, 3)]
    processes = start_together(commands, tmp_path / "gate")
    written = {}
    for seed, process in zip((1, 2, 3), processes, strict=True):
        stdout, stderr = process.communicate()
        assert process.returncode == 0, stderr
        (line,) = [line for line in stdout.splitlines() if line.startswith("result: ")]
        path = Path(line.removeprefix("result: ").removesuffix(" (complete)"))
        written[seed] = path
        document = results.load(path)
        assert document["status"] == "complete" and document["settings"]["seed"] == seed
    assert len(set(written.values())) == 3
    assert sorted(p.name for p in out.glob("*.json")) == sorted(p.name for p in written.values())
    assert leftovers(out) == []


@pytest.mark.slow
def test_two_runs_given_the_same_output_never_share_it(tmp_path: Path) -> None:
    """One writes it; the other is refused at once (exit 2), so no 'complete' run lost its file."""
    target = tmp_path / "same.json"
    commands = [
        seeded_run(seed, "--output", str(target), cache=tmp_path / "cache") for seed in (1, 2)
    ]
    processes = start_together(commands, tmp_path / "gate")
    outcomes = {
        seed: (p.returncode, *p.communicate()) for seed, p in zip((1, 2), processes, strict=True)
    }
    codes = sorted(code for code, _, _ in outcomes.values())
    assert codes == [0, 2], outcomes
    (winner,) = [seed for seed, (code, _, _) in outcomes.items() if code == 0]
    (loser,) = [outcomes[seed] for seed in outcomes if seed != winner]
    assert "is being written by another dlbench run (pid " in loser[2]
    assert len(loser[2].strip().splitlines()) == 1
    document = results.load(target)
    assert document["status"] == "complete" and document["settings"]["seed"] == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "gate", "logs", "same.json"]


@pytest.mark.slow
def test_every_second_of_a_run_is_in_one_named_part(tmp_path: Path) -> None:
    """A real short fit run: the parts sum to end_to_end_s; fit's set-up, the worker's own
    imports and the command's start-up are recorded; the table says what it counts."""
    target = tmp_path / "r.json"
    done = run_captured(
        dlbench_argv(*SHORT, "--epochs", "3", "--output", str(target), cache=tmp_path / "cache"),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    document = results.load(target)
    run = document["runs"][0]
    parts = run["parts"]
    assert list(parts) == [
        "interpreter_s",
        "worker_imports_s",
        "keras_import_s",
        "backend_start_s",
        "data_s",
        "build_s",
        "fit_setup_s",
        "first_epoch_s",
        "steady_epochs_s",
        "evaluation_s",
        "exit_s",
    ]
    end_to_end = run["timing"]["end_to_end_s"]
    assert end_to_end is not None
    assert abs(sum(parts.values()) - end_to_end) < 0.005
    assert parts["worker_imports_s"] > 0 and parts["fit_setup_s"] > 0
    assert run["timing"]["fit_setup_s"] == pytest.approx(parts["fit_setup_s"])
    # The first epoch's part is the epoch as Keras timed it, plus the event's own few ms.
    first = run["epochs"][0]["wall_s"]
    assert first <= parts["first_epoch_s"] < first + 0.05
    startup = document.get("startup_s")
    assert startup is not None and 0 < startup < end_to_end * 10
    assert "dlbench's own start-up before the first run" in done.stdout
    header = done.stdout.splitlines()[-6]
    for label in ("train samples/s", "epoch s (train + validation)", "end-to-end s per run"):
        assert label in header, header


# A small disk: a tmpfs of its own, filled on purpose.


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (tests using it are marked root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here: {done.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Write zeros until the disk refuses one more byte."""
    with (disk / "filler").open("ab", buffering=0) as handle:
        chunk = b"\0" * 65536
        while True:
            try:
                handle.write(chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]


@pytest.mark.root
def test_a_failed_result_write_leaves_no_temp_file(small_disk: Path) -> None:
    fill(small_disk)
    document = json.loads((REPO / "tests/data/results/fixture-cpu-b.json").read_text())
    with pytest.raises(results.ResultWriteError, match="No space left on device"):
        results.write_atomic(small_disk / "r.json", document)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


@pytest.mark.root
def test_a_disk_that_fills_after_a_small_write_still_gets_the_failure_mark(
    small_disk: Path,
) -> None:
    """The first write holds no run yet; the document when the disk fills holds two. The mark
    goes over the file's own bytes: the whole document if it fits, else the last write's."""
    full = json.loads((REPO / "tests/data/results/fixture-cpu-b.json").read_text())
    first = {**copy.deepcopy(full), "runs": [], "summary": {}, "status": "incomplete"}
    first["incomplete_reason"] = "running"
    path = small_disk / "r.json"
    results.write_atomic(path, first)
    fill(small_disk)
    for run in full["runs"]:
        run["status"] = "incomplete"
    # A reason longer than what the compact form saves (a deep folder's path): it fits only in
    # the room each write keeps for it.
    reason = f"cannot write {'/deep' * 80}/r.json: No space left on device"
    assert results.record_failure(path, full, reason) == "last write"
    marked = results.load(path)
    assert (marked["status"], marked["incomplete_reason"]) == ("failed", reason)
    assert marked["runs"] == []


@pytest.mark.root
def test_a_failed_encode_cache_write_leaves_no_temp_file(small_disk: Path) -> None:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {
        "x_train": rng.integers(0, 2, (4000, 10000), dtype=np.uint8),
        "x_test": rng.integers(0, 2, (100, 10000), dtype=np.uint8),
        "labels_train": np.zeros(4000),
        "labels_test": np.zeros(100),
    }
    cache = data.EncodedCache(small_disk)
    cache.store(small_disk / "encoded" / "imdb-x.npz", arrays)  # 5 MB packed: does not fit
    assert list((small_disk / "encoded").iterdir()) == []


@pytest.mark.slow
@pytest.mark.root
def test_a_run_on_a_full_disk_is_one_line_and_exit_1(tmp_path: Path, small_disk: Path) -> None:
    fill(small_disk)
    done = run_captured(
        dlbench_argv(*SHORT, "--epochs", "1", "--out", str(small_disk), cache=tmp_path / "cache"),
        timeout=600,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "No space left on device; the run stopped and no result was written" in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


@pytest.mark.root
@pytest.mark.parametrize("where", ["--out", "--output"])
def test_a_disk_full_before_the_run_is_a_failed_run_and_leaves_nothing(
    tmp_path: Path, small_disk: Path, where: str
) -> None:
    fill(small_disk)
    target = small_disk if where == "--out" else small_disk / "r.json"
    done = run_captured(
        dlbench_argv(*SHORT, "--epochs", "1", where, str(target), cache=tmp_path / "cache"),
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "dlbench: No space left on device; the run stopped and no result was written"
    ]
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def workers_of(cache: Path) -> list[psutil.Process]:
    """Worker processes whose job names this test's cache folder."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "bench.training.worker" in cmdline and str(cache) in cmdline:
            found.append(process)
    return found


@pytest.mark.slow
@pytest.mark.root
def test_a_disk_filled_during_a_run_stops_it_and_marks_the_result(
    tmp_path: Path, small_disk: Path
) -> None:
    cache = tmp_path / "cache"
    process = start(dlbench_argv(*SHORT, "--epochs", "500", "--out", str(small_disk), cache=cache))
    path = wait_for_epochs(small_disk / "*.json", 2)
    fill(small_disk)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .endswith(f"No space left on device; the run stopped and {path} is marked failed")
    )
    assert workers_of(cache) == [], "the worker was stopped, not left running"
    assert leftovers(small_disk) == []
    document = results.load(path)
    assert document["status"] == "failed"
    assert "No space left on device" in (document["incomplete_reason"] or "")
    run = document["runs"][0]
    assert run["status"] == "failed" and len(run["epochs"]) >= 2


@pytest.mark.root
def test_a_report_on_a_full_disk_leaves_the_old_report_whole(small_disk: Path) -> None:
    out = small_disk / "report"
    fixture = str(REPO / "tests/data/results/fixture-cpu-b.json")
    first = run_captured(
        dlbench_argv("report", fixture, "--out", str(out), "--title", "first"),
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    fill(small_disk)
    second = run_captured(
        dlbench_argv("report", fixture, "--out", str(out), "--title", "second"),
        timeout=300,
    )
    assert second.returncode == 1, second.stderr
    assert "Traceback" not in second.stderr
    (line,) = second.stderr.strip().splitlines()
    assert f"cannot write the report to {out}: No space left on device" in line
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before, "the first report is as it was"
    assert leftovers(out) == []


@pytest.mark.slow
def test_sigterm_inside_the_result_write_leaves_no_temp_file(tmp_path: Path) -> None:
    """The signal lands while the temp file is full and not yet renamed (the seam): the write
    finishes, then the run stops as interrupted."""
    target = tmp_path / "out" / "r.json"
    plan = short_check_plan("jax", 50, tmp_path / "cache", target, telemetry_interval_s=0)
    document = new_document(plan, "no NVML here", "no price", ["test"])
    runner = Runner(plan, document, Progress(quiet=True, stream=io.StringIO()), "no", "no")
    seen: list[Path] = []

    def stop_here(tmp: Path) -> None:
        seen.append(tmp)
        if len(seen) == 3:  # the initial write, epoch 1, then epoch 2
            os.kill(os.getpid(), signal.SIGTERM)

    results.BEFORE_RENAME.append(stop_here)
    try:
        code = runner.execute()
    finally:
        results.BEFORE_RENAME.remove(stop_here)
    assert code == 128 + signal.SIGTERM
    assert leftovers(tmp_path / "out") == []
    saved = results.load(target)
    assert saved["status"] == "incomplete"
    assert saved["incomplete_reason"] == "interrupted by SIGTERM"
    assert len(saved["runs"][0]["epochs"]) == 2, "the write the signal hit was finished"


def test_sigterm_with_no_handler_waits_for_the_write_to_finish(tmp_path: Path) -> None:
    """Outside a run's handlers (its last write) SIGTERM kills: only after the rename."""
    script = (
        "import json, os, signal, sys; from pathlib import Path; "
        "from bench.results import document as results; "
        "results.BEFORE_RENAME.append(lambda tmp: os.kill(os.getpid(), signal.SIGTERM)); "
        "results.write_atomic(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())); "
        "print('not reached')"
    )
    target = tmp_path / "r.json"
    fixture = REPO / "tests/data/results/fixture-cpu-b.json"
    done = run_captured(
        [sys.executable, "-c", script, str(target), str(fixture)],
        timeout=120,
    )
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert "not reached" not in done.stdout
    assert leftovers(tmp_path) == []
    assert results.load(target)["runs"], "the write finished before the signal killed it"
