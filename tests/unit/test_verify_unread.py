"""`dlbench verify` never prints a value it did not read: odd NVML answers, a watch that stops,
maxima not read, a missing binding, crashes of its own children, and malformed probe output.

Each test asserts the exact line and the verdict, on the fake NVML and fake processes.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from bench import exitcodes
from bench.machine import nvml, probe, verify, verify_measure
from bench.machine.verify import FAIL, INFO, PASS, WARN
from tests.fakes.nvml import NVML_ERROR_UNKNOWN, FakeNvml, NVMLError
from tests.unit.test_verify import FakeMachine, FakeProcess, line

QUICK: dict[str, object] = {"level": "quick", "expect_gpus": 1}
FULL: dict[str, object] = {"expect_gpus": 1}
A100 = "NVIDIA A100-SXM4-80GB"


def one_a100(**options: Any) -> FakeMachine:
    """A healthy machine with one A100 (the first of the a100x8 scenario)."""
    box = FakeMachine("a100x8", **options)
    box.fake.gpus = box.fake.gpus[:1]
    return box


def strict(text: str) -> Any:
    """JSON as every parser reads it: NaN and infinities are refused."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_an_xid_watch_that_stops_mid_verify_says_so_and_passes_only_the_kernel_log() -> None:
    box = one_a100()

    def wait(event_set: str, timeout_ms: int) -> Any:
        raise NVMLError(NVML_ERROR_UNKNOWN)

    box.fake.nvmlEventSetWait_v2 = wait  # type: ignore[method-assign]
    final, text, checks = box.verify(**FULL)
    lines = text.splitlines()
    assert line(PASS, "gpu0", "xid", "none (the kernel log since boot)") in lines, text
    assert (
        line(
            WARN,
            "gpu0",
            "xid events",
            "NVML Xid events not watched to the end of the verify: Xid watch stopped: "
            "Unknown Error; the kernel log since boot was still checked",
        )
        in lines
    ), text
    assert "NVML events during the verify" not in text
    assert final == WARN
    document = verify.as_document(checks, final, box.seen, "host-a")
    events = next(c for c in document["gpus"][0]["checks"] if c["name"] == "xid events")
    assert (events["state"], events["status"], events["value"]) == (verify.UNREAD, WARN, None)


def _set(name: str, answer: Any) -> Any:
    def patch(fake: FakeNvml) -> None:
        setattr(fake, name, lambda *args: answer)

    return patch


def _gpu(**fields: Any) -> Any:
    def patch(fake: FakeNvml) -> None:
        for gpu in fake.gpus:
            for key, value in fields.items():
                setattr(gpu, key, value)

    return patch


# An answer NVML returned without raising: None, a not-available filler, negative, the wrong
# type, or a limit of zero. Each is not read: its line says so and no value is judged.
ODD_ANSWERS = {
    "ecc counters none": (
        _set("nvmlDeviceGetTotalEccErrors", None),
        QUICK,
        (
            WARN,
            "gpu0",
            "ecc",
            "ECC on; uncorrected error counters not read (since the driver loaded: NVML gave "
            "no value; lifetime: NVML gave no value)",
        ),
        WARN,
    ),
    "ecc count negative": (
        _set("nvmlDeviceGetTotalEccErrors", -1),
        QUICK,
        (
            WARN,
            "gpu0",
            "ecc",
            "ECC on; uncorrected error counters not read (since the driver loaded: NVML gave "
            "an impossible value -1; lifetime: NVML gave an impossible value -1)",
        ),
        WARN,
    ),
    "ecc mode n/a": (
        _set("nvmlDeviceGetEccMode", "N/A"),
        QUICK,
        (WARN, "gpu0", "ecc", "ECC mode could not be read: NVML gave an impossible value 'N/A'"),
        WARN,
    ),
    "persistence none": (
        _set("nvmlDeviceGetPersistenceMode", None),
        QUICK,
        (WARN, "gpu0", "persistence", "persistence mode could not be read: NVML gave no value"),
        WARN,
    ),
    "retired pages none": (
        _set("nvmlDeviceGetRetiredPagesPendingStatus", None),
        QUICK,
        (WARN, "gpu0", "retired pages", "could not be read: NVML gave no value"),
        WARN,
    ),
    "remapped rows none": (
        _set("nvmlDeviceGetRemappedRows", None),
        QUICK,
        (WARN, "gpu0", "row remap", "could not be read: NVML gave no value"),
        WARN,
    ),
    "replay negative": (
        _set("nvmlDeviceGetPcieReplayCounter", -1),
        FULL,
        (
            WARN,
            "gpu0",
            "pcie replay",
            "the PCIe replay counter could not be read: NVML gave an impossible value -1",
        ),
        WARN,
    ),
    "replay none": (
        _set("nvmlDeviceGetPcieReplayCounter", None),
        FULL,
        (
            WARN,
            "gpu0",
            "pcie replay",
            "the PCIe replay counter could not be read: NVML gave no value",
        ),
        WARN,
    ),
    "cuda version negative": (
        _set("nvmlSystemGetCudaDriverVersion", -1),
        QUICK,
        (INFO, "machine", "cuda version", "CUDA version not read from NVML"),
        PASS,
    ),
    "device count negative": (
        _set("nvmlDeviceGetCount", -1),
        QUICK,
        (WARN, "machine", "nvml", nvml.COUNT_UNREAD),
        WARN,
    ),
    "slowdown threshold zero": (
        _gpu(slowdown_c=0),
        FULL,
        (
            INFO,
            "gpu0",
            "temperature",
            "66 C under load; slowdown threshold not read: NVML gave an impossible value 0",
        ),
        PASS,
    ),
    "max gen filler": (
        _gpu(pcie_max=(0xFFFFFFFF, 4, 16)),
        FULL,
        (
            WARN,
            "gpu0",
            "pcie link",
            "x16 Gen 4 under load; what the GPU and slot can do was not read (GPU max gen: "
            "NVML gave an impossible value 4294967295)",
        ),
        WARN,
    ),
    "temperature above any gpu's": (
        _set("nvmlDeviceGetTemperature", 200),
        FULL,
        (INFO, "gpu0", "temperature", "not reported under load"),
        PASS,
    ),
    "slowdown threshold above any gpu's": (
        _gpu(slowdown_c=255),
        FULL,
        (
            INFO,
            "gpu0",
            "temperature",
            "66 C under load; slowdown threshold not read: NVML gave an impossible value 255",
        ),
        PASS,
    ),
    "max gen beyond pcie": (
        _gpu(pcie_max=(8, 4, 16)),
        FULL,
        (
            WARN,
            "gpu0",
            "pcie link",
            "x16 Gen 4 under load; what the GPU and slot can do was not read (GPU max gen: "
            "NVML gave an impossible value 8)",
        ),
        WARN,
    ),
    "max width no lane count": (
        _gpu(pcie_max=(4, 4, 15)),
        FULL,
        (
            WARN,
            "gpu0",
            "pcie link",
            "x16 Gen 4 under load; what the GPU and slot can do was not read (max width: "
            "NVML gave an impossible value 15)",
        ),
        WARN,
    ),
    "current gen beyond pcie": (
        _gpu(pcie_load=(9, 16)),
        FULL,
        (INFO, "gpu0", "pcie link", "link generation and width not reported under load"),
        PASS,
    ),
    "current gen above the maxima": (
        _gpu(pcie_load=(5, 16)),
        FULL,
        (
            WARN,
            "gpu0",
            "pcie link",
            "x16 Gen 5 under load, above the maximum NVML read (GPU max gen 4, slot max gen 4), "
            "so the maxima are not trusted",
        ),
        WARN,
    ),
    "current width above the maximum": (
        _gpu(pcie_load=(4, 32)),
        FULL,
        (
            WARN,
            "gpu0",
            "pcie link",
            "x32 Gen 4 under load, above the maximum NVML read (max width x16), so the maxima "
            "are not trusted",
        ),
        WARN,
    ),
    "temperature filler": (
        _set("nvmlDeviceGetTemperature", 0xFFFFFFFF),
        FULL,
        (INFO, "gpu0", "temperature", "not reported under load"),
        PASS,
    ),
}


@pytest.mark.parametrize("case", sorted(ODD_ANSWERS))
def test_an_answer_that_is_no_reading_is_said_not_read(case: str) -> None:
    patch, options, expected, final = ODD_ANSWERS[case]
    box = one_a100()
    patch(box.fake)
    got, text, checks = box.verify(**options)
    assert line(*expected) in text.splitlines(), text
    assert got == final, text
    assert all(c.value is None for c in checks if c.state == verify.UNREAD)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "NVML gave no value"),
        (-1, "NVML gave an impossible value -1"),
        (0xFFFFFFFF, "NVML gave an impossible value 4294967295"),
        (0xFFFFFFFFFFFFFFFF, "NVML gave an impossible value 18446744073709551615"),
        ("7", "NVML gave an impossible value '7'"),
        (3, None),
        (0, None),
    ],
)
def test_a_count_is_a_non_negative_integer_that_is_not_a_filler(
    value: object, reason: str | None
) -> None:
    assert nvml.unread_reason(value, nvml.is_count) == reason


# A maximum that was not read is said, and a link is failed only on maxima that were read.
LINKS = {
    "max width refused, generation down": (
        {"pcie_load": (3, 16), "refuses": {"nvmlDeviceGetMaxPcieLinkWidth": NVML_ERROR_UNKNOWN}},
        (
            FAIL,
            "gpu0",
            "pcie link",
            "x16 Gen 3 under load; this GPU and slot can do Gen 4 (max width not read: "
            "Unknown Error)",
        ),
        FAIL,
    ),
    "max generations refused, width down": (
        {
            "pcie_load": (4, 8),
            "refuses": {
                "nvmlDeviceGetGpuMaxPcieLinkGeneration": NVML_ERROR_UNKNOWN,
                "nvmlDeviceGetMaxPcieLinkGeneration": NVML_ERROR_UNKNOWN,
            },
        },
        (
            FAIL,
            "gpu0",
            "pcie link",
            "x8 Gen 4 under load; this GPU and slot can do x16 (GPU max gen not read: Unknown "
            "Error; slot max gen not read: Unknown Error)",
        ),
        FAIL,
    ),
    "GPU max generation refused, generation below the slot's": (
        {
            "pcie_load": (3, 16),
            "refuses": {"nvmlDeviceGetGpuMaxPcieLinkGeneration": NVML_ERROR_UNKNOWN},
        },
        (
            WARN,
            "gpu0",
            "pcie link",
            "x16 Gen 3 under load; what the GPU and slot can do was not read (GPU max gen: "
            "Unknown Error)",
        ),
        WARN,
    ),
}


@pytest.mark.parametrize("case", sorted(LINKS))
def test_a_link_line_says_only_the_maxima_it_read(case: str) -> None:
    fields, expected, final = LINKS[case]
    box = one_a100()
    _gpu(**fields)(box.fake)
    got, text, _ = box.verify(**FULL)
    assert line(*expected) in text.splitlines(), text
    assert got == final, text


def test_a_missing_binding_is_not_read_and_the_probe_says_which_device_computed() -> None:
    def no_module() -> Any:
        raise ImportError("No module named 'pynvml'")

    box = FakeMachine("a100x8")
    box.seams.open_nvml = lambda: nvml.open_nvml(no_module)
    box.seams.python = "/srv/dlstation/.venv/bin/python"
    started = box.start

    def start(argv: list[str], env: dict[str, str], log: Path) -> FakeProcess:
        process = started(argv, env, log)
        process.software = {"device_type": "GPU"}  # the backend found the GPU on its own
        return process

    box.seams.start = start
    final, text, _ = box.verify(expect_gpu=True)
    lines = text.splitlines()
    said = line(
        WARN,
        "machine",
        "nvml",
        "NVML not asked: the Python package nvidia-ml-py is not installed in this "
        "environment, so the GPUs' health was not read",
    )
    assert said in lines, text
    assert lines[lines.index(said) + 1].endswith(
        "what to do: /srv/dlstation/.venv/bin/python -m pip install nvidia-ml-py"
    )
    assert (
        line(
            WARN,
            "machine",
            "gpu count",
            "not counted: NVML not asked (nvidia-ml-py is not installed); 1 expected "
            "(--expect-gpu)",
        )
        in lines
    ), text
    assert (
        line(
            INFO,
            "host",
            "throughput",
            f"{A100}: matmul float32 18.9 TFLOP/s, bfloat16 231.0 TFLOP/s, copy 1712.0 GB/s "
            "(not judged: NVML did not say which GPU this is)",
        )
        in lines
    ), text
    assert "driver" not in text and FAIL not in text
    assert final == WARN


def _crashing_workload(box: FakeMachine) -> None:
    started = box.start

    def start(argv: list[str], env: dict[str, str], log: Path) -> FakeProcess:
        process = started(argv, env, log)
        if "--output" in argv:
            Path(argv[argv.index("--output") + 1]).unlink()
            process.code = exitcodes.INTERNAL
            process.output = lambda: (  # type: ignore[method-assign]
                'Traceback (most recent call last):\n  File "runner.py", line 9\n'
                "KeyError: 'steady'\ndlbench: internal error in `dlbench run` (a bug in "
                "dlstation, exit 70): the traceback is above; please report it\n"
            )
        return process

    box.seams.start = start


def _crashing_probe(box: FakeMachine) -> None:
    started = box.start

    def start(argv: list[str], env: dict[str, str], log: Path) -> FakeProcess:
        process = started(argv, env, log)
        if "--output" not in argv:
            process.code = exitcodes.INTERNAL
            said = {"backend": "jax", "internal_error": "KeyError: 'matmul'"}
            process.output = lambda: json.dumps(said) + "\n"  # type: ignore[method-assign]
        return process

    box.seams.start = start


@pytest.mark.parametrize(
    ("crash", "check", "said"),
    [(_crashing_workload, "workload", "KeyError: 'steady'"), (_crashing_probe, "backend", None)],
)
def test_a_crash_of_dlstations_own_child_is_a_bug_to_report_never_a_fail(
    crash: Any, check: str, said: str | None
) -> None:
    box = one_a100()
    crash(box)
    final, text, _ = box.verify(**FULL)
    first = said or "KeyError: 'matmul'"
    expected = (
        f"internal error in dlstation (a bug, not a verdict on this machine): {first}; "
        "please report it"
    )
    assert line(WARN, "gpu0", check, expected) in text.splitlines(), text
    assert final == WARN


def test_the_probe_reports_its_own_bug_as_internal_and_a_backends_failure_as_a_finding(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(probe.importlib, "import_module", lambda name: None)

    def bug() -> dict[str, Any]:
        raise KeyError("matmul")

    def no_cuda() -> dict[str, Any]:
        raise ImportError("libcudart.so.12: cannot open shared object file")

    monkeypatch.setitem(probe.PROBES, "jax", bug)
    assert probe.main() == exitcodes.INTERNAL
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert printed == {"backend": "jax", "internal_error": "KeyError: 'matmul'"}
    monkeypatch.setitem(probe.PROBES, "jax", no_cuda)
    assert probe.main() == 1
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert printed["error"] == "ImportError: libcudart.so.12: cannot open shared object file"


# The probe's own record keeps what it said, as far as JSON can say it; the check reads nothing.
@pytest.mark.parametrize(("rate", "recorded"), [(float("nan"), None), (-5.0, -5.0)])
def test_a_rate_the_probe_gave_as_nan_or_negative_is_not_read_and_the_json_stays_strict(
    rate: float, recorded: float | None
) -> None:
    box = one_a100()
    started = box.start

    def start(argv: list[str], env: dict[str, str], log: Path) -> FakeProcess:
        process = started(argv, env, log)
        process.rates = {**process.rates, "copy": rate}
        return process

    box.seams.start = start
    final, text, checks = box.verify(**FULL)
    assert line(WARN, "gpu0", "memory copy", "the probe gave no number") in text.splitlines()
    assert final == WARN
    document = strict(verify.as_json(checks, final, box.seen, "host-a"))
    assert document["gpus"][0]["probe"]["copy_gbps"] == recorded
    copy = next(c for c in document["gpus"][0]["checks"] if c["name"] == "memory copy")
    assert copy["state"] == verify.UNREAD


HIDES = "names none of the 1 GPU(s) here and CUDA reads no further; runs started from this shell "


@pytest.mark.parametrize(
    ("variable", "status", "detail"),
    [
        (
            "-1,0",
            FAIL,
            f"CUDA_VISIBLE_DEVICES='-1,0' hides every GPU: '-1' {HIDES}compute on the CPU",
        ),
        ("7", FAIL, f"CUDA_VISIBLE_DEVICES='7' hides every GPU: '7' {HIDES}compute on the CPU"),
        ("²", FAIL, f"CUDA_VISIBLE_DEVICES='²' hides every GPU: '²' {HIDES}compute on the CPU"),
        (  # ARABIC-INDIC DIGIT ZERO: a digit to Python, no index to CUDA
            "\u0660",
            FAIL,
            f"CUDA_VISIBLE_DEVICES='\u0660' hides every GPU: '\u0660' {HIDES}compute on the CPU",
        ),
        (
            "GPU-nonexistent",
            FAIL,
            "CUDA_VISIBLE_DEVICES='GPU-nonexistent' hides every GPU: 'GPU-nonexistent' "
            f"{HIDES}compute on the CPU",
        ),
        (
            "0,,1",
            INFO,
            "CUDA_VISIBLE_DEVICES='0,,1': CUDA stops at the empty entry (it names no GPU here), "
            "so runs see only GPU 0 (verify checks all)",
        ),
        (
            "GPU-00000000",
            INFO,
            "CUDA_VISIBLE_DEVICES='GPU-00000000': runs see only those GPUs (verify checks all)",
        ),
        (  # a MIG instance is no GPU NVML lists here: not a GPU it failed to find
            "MIG-4f1e2c3b-0000-5a6b-8c9d-000000000000",
            INFO,
            "CUDA_VISIBLE_DEVICES='MIG-4f1e2c3b-0000-5a6b-8c9d-000000000000': runs see only "
            "those devices (verify checks all)",
        ),
    ],
)
def test_cuda_visible_devices_is_read_as_cuda_reads_it(
    variable: str, status: str, detail: str
) -> None:
    box = one_a100()
    box.fake.environ = {"CUDA_VISIBLE_DEVICES": variable}
    final, text, _ = box.verify(**QUICK)
    assert line(status, "machine", "cuda visible", detail) in text.splitlines(), text
    assert final == (FAIL if status == FAIL else PASS)


def test_a_kernel_log_that_is_not_utf8_is_read_with_replacements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dmesg = tmp_path / "dmesg"
    dmesg.write_text(
        "#!/bin/sh\nprintf '[ 1.0] \\377\\376 driver noise\\n"
        "[ 2.0] NVRM: Xid (PCI:0000:10:00): 48, pid=1\\n'\n"
    )
    dmesg.chmod(dmesg.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    lines = verify_measure.read_kernel_log()
    assert isinstance(lines, list) and lines[0] == "[ 1.0] \ufffd\ufffd driver noise"
    assert [e["xid"] for e in verify_measure.kernel_xids(lines)] == [48]


@pytest.mark.parametrize(
    ("output", "expected", "final"),
    [
        (
            "{not json from a framework}\n",
            line(
                WARN,
                "gpu0",
                "backend",
                "the probe's result is not readable JSON: {not json from a framework}",
            ),
            WARN,
        ),
        (None, line(PASS, "gpu0", "backend", f"jax computes on {A100}"), PASS),
    ],
)
def test_a_probe_line_that_starts_with_a_brace_but_is_not_json_is_not_read(
    output: str | None, expected: str, final: str
) -> None:
    box = one_a100()
    started = box.start

    def start(argv: list[str], env: dict[str, str], log: Path) -> FakeProcess:
        process = started(argv, env, log)
        if "--output" not in argv:
            good = process.output()
            noise = "{not json from a framework}\n"
            process.output = (  # type: ignore[method-assign]
                (lambda: output) if output else (lambda: good + noise)
            )
        return process

    box.seams.start = start
    got, text, _ = box.verify(**FULL)
    assert expected in text.splitlines(), text
    assert got == final, text


def test_a_gpu_whose_uuid_was_not_read_is_pinned_by_its_index_in_nvmls_order() -> None:
    box = one_a100()
    box.fake.gpus[0].refuses = {"nvmlDeviceGetUUID": NVML_ERROR_UNKNOWN}
    final, text, _ = box.verify(**FULL)
    lines = text.splitlines()
    assert box.started[0][2] == "0", box.started
    assert line(PASS, "gpu0", "backend", f"jax computes on {A100}") in lines, text
    assert (
        line(PASS, "gpu0", "pcie link", "x16 Gen 4 under load, the maximum of GPU and slot")
        in lines
    ), text
    assert FAIL not in text
    assert final == PASS, text


def test_a_gpu_left_idle_by_a_probe_on_the_cpu_has_no_load_readings_judged() -> None:
    final, text, checks = FakeMachine("cpu_only_backend_build").verify(**FULL)
    lines = text.splitlines()
    idle = "no load reached this GPU: the probe computed on the CPU"
    for check in ("pcie link", "throttle", "temperature"):
        assert line(INFO, "gpu0", check, idle) in lines, text
    assert [c.name for c in checks if c.status == FAIL] == ["backend"], text
    assert final == FAIL


def test_an_xid_event_without_data_stops_the_watch_and_says_so() -> None:
    box = one_a100()
    box.fake.pending_xids = [(0, None)]  # type: ignore[list-item]
    final, text, _ = box.verify(**FULL)
    lines = text.splitlines()
    assert (
        line(
            WARN,
            "gpu0",
            "xid events",
            "NVML Xid events not watched to the end of the verify: Xid watch stopped: "
            "TypeError: int() argument must be a string, a bytes-like object or a real number, "
            "not 'NoneType'; the kernel log since boot was still checked",
        )
        in lines
    ), text
    assert line(PASS, "gpu0", "xid", "none (the kernel log since boot)") in lines, text
    assert final == WARN


class InterruptedMonitor(verify_measure.LoadMonitor):
    """A monitor whose first reading meets the user's Ctrl-C."""

    def sample(self, busy: list[tuple[str, int]]) -> None:
        raise KeyboardInterrupt


def test_a_ctrl_c_during_the_probes_stops_every_child_they_started(tmp_path: Path) -> None:
    children: list[verify_measure.RealProcess] = []

    def start(argv: list[str], env: dict[str, str], log: Path) -> verify_measure.Process:
        child = verify_measure.RealProcess(argv, env, log)
        children.append(child)
        return child

    plans = [
        verify_measure.TargetPlan(f"gpu{i}", i, {}, [verify_measure.Step("probe", ["sleep", "60"])])
        for i in range(2)
    ]
    seams = verify_measure.Seams(start=start, sleep=lambda seconds: None)
    with pytest.raises(KeyboardInterrupt):
        verify_measure.run_plans(plans, seams, InterruptedMonitor(None), tmp_path)
    assert [c.popen.returncode for c in children] == [-signal.SIGTERM, -signal.SIGTERM]


@pytest.mark.parametrize("rate", [None, float("nan")])
def test_a_run_without_a_steady_rate_is_not_read_and_the_json_stays_strict(
    rate: float | None,
) -> None:
    box = one_a100()
    box.fake.gpus[0].probe = {"samples_per_s": rate}
    final, text, checks = box.verify(**FULL)
    lines = text.splitlines()
    assert line(WARN, "gpu0", "workload", "the run gave no steady rate") in lines, text
    assert "reference" not in text
    assert final == WARN
    document = strict(verify.as_json(checks, final, box.seen, "host-a"))
    workload = next(c for c in document["gpus"][0]["checks"] if c["name"] == "workload")
    assert (workload["state"], workload["value"]) == (verify.UNREAD, None)


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (nvml.is_flag, [0, 1], [5, -1, "1", None]),
        (nvml.is_flags, [1, [1, 0], (0, 0)], [[1, 7], [], 2, ["1"]]),
        (nvml.is_rows, [(0, 0, 0, 0), [3, 0, 1, 0]], [[0, 0], (0, 0, 0, -1), "0000", None]),
        (nvml.is_text, ["NVIDIA A100", b"580.95.05"], ["", b"", 7, None]),
    ],
)
def test_a_shape_check_takes_what_nvml_answers_and_nothing_else(
    check: Any, good: list[Any], bad: list[Any]
) -> None:
    """The seam's word on what counts as read: a mode of 5, an empty name or two of the four
    remapped-row counts is no reading, whatever the check that would have judged it."""
    assert [check(value) for value in good] == [True] * len(good)
    assert [check(value) for value in bad] == [False] * len(bad)
