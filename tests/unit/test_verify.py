"""`dlbench verify` on the fake NVML's machine scenarios, with fake probe processes.

Each scenario asserts the machine's verdict and the exact line that decides it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.machine import imds, nvml, verify, verify_measure
from bench.machine.verify import FAIL, INFO, PASS, WARN
from bench.machine.verify_measure import Options, Seams
from tests.fakes.imds import ImdsServer
from tests.fakes.nvml import KERNEL_LOG, MACHINES, FakeNvml, machine

# Probe figures of a healthy A100-SXM4-80GB (datasheet: 19.5 fp32, 312 bf16, 2039 GB/s).
A100_PROBE = {"float32": 18.9, "bfloat16": 231.0, "copy": 1712.0}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeProcess:
    """A probe or training process that 'runs' for `polls` polls, its GPU loaded meanwhile.

    What it reports follows its GPU's `probe` (the scenario's software side); unpinned, it
    computes on the CPU.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        fake: FakeNvml,
        polls: int,
        rates: dict[str, float],
    ) -> None:
        self.argv, self.env, self.fake, self.left = argv, env, fake, polls
        self.index = fake.pinned(env)
        self.software = fake.gpus[self.index].probe if self.index is not None else {}
        self.rates = {**rates, **self.software.get("rates", {})}
        self.code = 1 if "error" in self.software else 0
        self._load(True)
        if "--output" in argv:
            record: dict[str, object] = {
                "status": "complete",
                "throughput": {"steady_samples_per_s": self.software.get("samples_per_s", 80e3)},
                "backend": {"device_name": self.device_name},
                "timing": {"end_to_end_s": 6.5},
            }
            if self.software.get("workload") == "failed":
                record = {"status": "failed", "error": {"message": "CUDA_ERROR_OUT_OF_MEMORY"}}
            Path(argv[argv.index("--output") + 1]).write_text(json.dumps({"runs": [record]}))

    def _load(self, loaded: bool) -> None:
        """Only a process that computes on its GPU loads it; one on the CPU leaves it idle."""
        if self.index is not None and self.device_type == "GPU":
            self.fake.set_loaded(self.index, loaded)

    @property
    def device_type(self) -> str:
        return str(self.software.get("device_type", "GPU" if self.index is not None else "CPU"))

    @property
    def device_name(self) -> str:
        return "NVIDIA A100-SXM4-80GB" if self.device_type == "GPU" else "CPU"

    def poll(self) -> int | None:
        self.left -= 1
        if self.left > 0:
            return None
        self._load(False)
        return self.code

    def terminate(self) -> None:
        self.left = 0

    def kill(self) -> None:
        self.left = 0

    def output(self) -> str:
        if "error" in self.software:
            return json.dumps({"backend": "jax", "error": self.software["error"]}) + "\n"
        probe = {
            "backend": "jax",
            "device_type": self.device_type,
            "device_name": self.device_name,
            "cuda_build": self.software.get("cuda_build", True),
            "matmul": {
                "float32": {"n": 8192, "tflops": self.rates["float32"]},
                "bfloat16": {"n": 8192, "tflops": self.rates["bfloat16"]},
            },
            "copy_gbps": self.rates["copy"],
            "timing": {"import_s": 2.1, "matmul_float32_s": 0.7},
        }
        return "some framework log line\n" + json.dumps(probe) + "\n"


class FakeMachine:
    """The seams of one scenario: fake NVML, fake processes, a kernel log, a fake clock."""

    def __init__(
        self,
        scenario: str,
        kernel_log: list[str] | str | None = None,
        slow: dict[str, float] | None = None,
        polls: int = 10,
    ) -> None:
        self.fake = machine(scenario)
        self.clock = FakeClock()
        self.started: list[tuple[float, str, str | None]] = []
        self.slow = slow or {}
        self.polls = polls
        log = KERNEL_LOG.get(scenario, []) if kernel_log is None else kernel_log
        self.seams = Seams(
            open_nvml=lambda: nvml.open_nvml(lambda: self.fake),
            start=self.start,
            kernel_log=lambda: log if isinstance(log, str) else list(log),
            imds_lookup=lambda: "not on EC2",
            on_ec2=lambda: False,
            environ=self.environ,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def environ(self, name: str) -> str | None:
        return self.fake.environ.get(name)

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> FakeProcess:
        step = "workload" if "--output" in argv else "probe"
        self.started.append((self.clock(), step, env.get("CUDA_VISIBLE_DEVICES")))
        factor = self.slow.get(env.get("CUDA_VISIBLE_DEVICES", ""), 1.0)
        rates = {k: v * factor for k, v in A100_PROBE.items()}
        return FakeProcess(argv, env, self.fake, self.polls, rates)

    def verify(self, **options: object) -> tuple[str, str, list[verify.Check]]:
        options.setdefault("backend", "jax")
        seen = verify_measure.measure(Options(**options), self.seams, say=str)  # type: ignore[arg-type]
        checks = verify.judge(seen)
        final = verify.verdict(checks)
        self.seen = seen
        return final, verify.render(checks, final, seen), checks


def line(status: str, scope: str, check: str, detail: str) -> str:
    return f"  {status:<4}  {scope:<7} {check:<15} {detail}"


def test_eight_healthy_a100s_pass_with_a_line_per_gpu_and_check() -> None:
    final, text, checks = FakeMachine("a100x8").verify(expect_gpus=8)
    assert final == PASS, text
    lines = text.splitlines()
    assert line(PASS, "machine", "nvml", "NVML answers: driver 580.95.05, CUDA 13.0") in lines
    assert (
        line(
            PASS,
            "gpu3",
            "workload",
            "the text's reuters model trains on NVIDIA A100-SXM4-80GB: 80,000 samples/s "
            "(synthetic data, fit)",
        )
        in lines
    )
    assert (
        line(
            "INFO",
            "gpu3",
            "reference",
            "no reference results for NVIDIA A100-SXM4-80GB with jax in bench/reference/",
        )
        in lines
    )
    assert (
        line(
            PASS,
            "gpu3",
            "xid",
            "none (NVML events during the verify and the kernel log since boot)",
        )
        in lines
    )
    assert (
        line(
            PASS,
            "machine",
            "gpu count",
            "8 of 8 expected GPUs (--expect-gpus 8): 8x NVIDIA A100-SXM4-80GB",
        )
        in lines
    )
    for index in range(8):
        assert (
            line(
                PASS,
                f"gpu{index}",
                "pcie link",
                "x16 Gen 4 under load, the maximum of GPU and slot",
            )
            in lines
        )
        scoped = {c.name for c in checks if c.scope == f"gpu{index}"}
        assert {"ecc", "retired pages", "row remap", "xid", "backend", "matmul float32"} <= scoped
        assert {
            "matmul bfloat16",
            "memory copy",
            "pcie replay",
            "throttle",
            "temperature",
        } <= scoped
        assert {"workload", "siblings", "persistence"} <= scoped
    assert lines[-2] == "per GPU: " + ", ".join(f"gpu{i} PASS" for i in range(8))
    assert lines[-1] == "verdict: PASS"


def test_probes_run_in_parallel_each_pinned_to_its_gpu_by_uuid() -> None:
    box = FakeMachine("a100x8", polls=5)
    box.verify(expect_gpus=8)
    probes = [(at, uuid) for at, step, uuid in box.started if step == "probe"]
    workloads = [(at, uuid) for at, step, uuid in box.started if step == "workload"]
    uuids = [f"GPU-0000000{i}-fake" for i in range(8)]
    assert probes == [(0.0, u) for u in uuids]  # all eight start at once
    assert [u for _, u in workloads] == uuids and all(at > 0 for at, _ in workloads)
    timing = box.seen.timing
    # Five polls of 0.1 s per step, both steps: the parallel wall time is one GPU's.
    assert timing["probes_wall_s"] == pytest.approx(1.0)
    assert timing["per_gpu"]["gpu7"] == {
        "probe_s": pytest.approx(0.5),
        "workload_s": pytest.approx(0.5),
        "probe_parts": {"import_s": 2.1, "matmul_float32_s": 0.7},
        "workload_parts": {"end_to_end_s": 6.5},
    }
    assert set(timing) >= {"nvml_start_s", "startup_s", "total_s"}


def test_probe_plan_pins_by_uuid_and_runs_the_short_training_after_the_probe(
    tmp_path: Path,
) -> None:
    gpus = [{"index": 0, "uuid": "GPU-a"}, {"index": 1, "uuid": "GPU-b"}]
    plans = verify_measure.probe_plan(gpus, Options(backend="torch"), tmp_path, "py")
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["GPU-a", "GPU-b"]
    assert [s.name for s in plans[1].steps] == ["probe", "workload"]
    assert plans[1].steps[1].argv[:6] == ["py", "-m", "bench", "run", "reuters", "--synthetic"]
    assert "--no-imds" in plans[1].steps[1].argv and plans[1].env["KERAS_BACKEND"] == "torch"
    cpu = verify_measure.probe_plan([], Options(workload=False), tmp_path, "py")
    assert [(p.key, p.env.get("CUDA_VISIBLE_DEVICES")) for p in cpu] == [("host", None)]


def test_one_gpu_at_x8_gen3_under_load_fails_and_is_named() -> None:
    final, text, _ = FakeMachine("x8_gen3_under_load").verify(expect_gpus=8)
    assert final == FAIL
    assert (
        line(FAIL, "gpu5", "pcie link", "x8 Gen 3 under load; this GPU and slot can do x16 Gen 4")
        in text.splitlines()
    )
    assert "gpu4 PASS, gpu5 FAIL, gpu6 PASS" in text


def test_pending_row_remap_fails() -> None:
    final, text, _ = FakeMachine("row_remap_pending").verify(level="quick", expect_gpus=4)
    assert final == FAIL
    assert (
        line(
            FAIL,
            "gpu2",
            "row remap",
            "a row remap is pending (1 uncorrectable, 0 correctable rows remapped): the bad row stays in use until a reset",  # noqa: E501
        )
        in text.splitlines()
    )


def test_row_remap_failure_fails() -> None:
    final, text, _ = FakeMachine("row_remap_failure").verify(level="quick", expect_gpus=4)
    assert final == FAIL
    assert (
        line(
            FAIL,
            "gpu1",
            "row remap",
            "row remapping failed (8 rows remapped for uncorrectable errors): the memory cannot be repaired",  # noqa: E501
        )
        in text.splitlines()
    )


def test_uncorrected_ecc_errors_fail() -> None:
    final, text, _ = FakeMachine("uncorrected_ecc").verify(level="quick", expect_gpus=4)
    assert final == FAIL
    assert (
        line(
            FAIL,
            "gpu3",
            "ecc",
            "2 uncorrected ECC error(s) since the driver loaded (5 in the card's lifetime)",
        )
        in text.splitlines()
    )


def test_xid_79_arriving_mid_verify_fails_and_says_what_it_means() -> None:
    box = FakeMachine("xid79_mid_verify")
    final, text, _ = box.verify(expect_gpus=4)
    assert final == FAIL
    lines = text.splitlines()
    xid = next(t for t in lines if " gpu1 " in t and " xid " in t)
    assert xid.startswith(line(FAIL, "gpu1", "xid", "Xid 79 at "))
    assert xid.endswith("s into the verify (NVML event): GPU has fallen off the bus")
    assert lines[lines.index(xid) + 1].endswith(f"what to do: {verify.REPLACE_FIX}")
    assert (
        line(FAIL, "gpu1", "nvml", "the GPU stopped answering NVML under load: GPU is lost")
        in lines
    )
    assert box.fake.freed_sets == 1


def test_a_gpu_lost_before_the_verify_fails_and_the_others_are_probed() -> None:
    box = FakeMachine("lost_at_start")
    final, text, _ = box.verify(expect_gpus=2)
    assert final == FAIL
    lines = text.splitlines()
    assert line(FAIL, "gpu1", "nvml", "the GPU does not answer NVML: GPU is lost") in lines
    assert [uuid for _, step, uuid in box.started if step == "probe"] == ["GPU-00000000-fake"]
    assert lines[-2] == "per GPU: gpu0 PASS, gpu1 FAIL"


def test_more_gpus_than_expected_warns_and_says_how_to_expect_them() -> None:
    final, text, checks = FakeMachine("a100x8").verify(level="quick", expect_gpus=1)
    assert final == WARN, text
    lines = text.splitlines()
    found = line(
        WARN,
        "machine",
        "gpu count",
        "8 GPUs where 1 expected (--expect-gpus 1): 8x NVIDIA A100-SXM4-80GB",
    )
    assert found in lines, text
    assert lines[lines.index(found) + 1].endswith(
        "what to do: check that this is the machine you meant; if 8 is right, expect 8 "
        "(--expect-gpus 8)"
    )
    (count,) = [c for c in checks if c.name == "gpu count"]
    assert count.value == {"found": 8, "expected": 1}


def test_three_of_four_expected_gpus_fails_naming_the_missing_one() -> None:
    box = FakeMachine("three_of_four_a10g")
    with ImdsServer(instance_type="g5.12xlarge") as server:
        box.seams.imds_lookup = lambda: imds.lookup(server.url)
        box.seams.on_ec2 = lambda: True
        final, text, _ = box.verify(level="quick")
    assert final == FAIL
    assert (
        line(
            FAIL,
            "machine",
            "gpu count",
            "3 of 4 expected GPUs (EC2 g5.12xlarge has 4x NVIDIA A10G): 1 NVIDIA A10G missing; NVML sees 3x NVIDIA A10G",  # noqa: E501
        )
        in text.splitlines()
    )


def test_geforce_without_ecc_says_not_supported_and_passes() -> None:
    final, text, _ = FakeMachine("geforce_no_ecc").verify(level="quick", expect_gpus=1)
    lines = text.splitlines()
    assert (
        line(
            "INFO",
            "gpu0",
            "ecc",
            "ECC mode not supported by NVIDIA GeForce RTX 4090: nothing to check",
        )
        in lines
    )
    assert (
        line(
            "INFO",
            "gpu0",
            "row remap",
            "not supported by NVIDIA GeForce RTX 4090: nothing to check",
        )
        in lines
    )
    assert (
        line(
            "INFO",
            "gpu0",
            "persistence",
            "persistence mode is off: each CUDA start pays the GPU's initialisation",
        )
        in lines
    )
    assert final == PASS


def test_driver_library_mismatch_fails_with_reboot_advice() -> None:
    final, text, _ = FakeMachine("mismatch").verify(level="quick")
    assert final == FAIL
    assert (
        line(
            FAIL,
            "machine",
            "nvml",
            "NVML did not start: Driver/library version mismatch; driver/library version mismatch: the driver's user libraries were upgraded under the loaded kernel module; reboot (or reload the nvidia module)",  # noqa: E501
        )
        in text.splitlines()
    )


def test_thermal_slowdown_held_for_half_the_load_fails() -> None:
    final, text, _ = FakeMachine("thermal_half_load", polls=10).verify(
        expect_gpus=2, workload=False
    )
    assert final == FAIL
    assert (
        line(
            FAIL,
            "gpu0",
            "throttle",
            "hw_thermal_slowdown held 50% of the load (5 of 10 readings, about 0.5 s of 1.0 s) (harmless: sw_power_cap 100%); SM clock mean 1492 MHz, max 1980 MHz (FAIL from 20%)",  # noqa: E501
        )
        in text.splitlines()
    )


def test_a_markedly_slower_sibling_is_named() -> None:
    final, text, _ = FakeMachine("a100x8", slow={"GPU-00000003-fake": 0.7}).verify(expect_gpus=8)
    assert final == WARN
    assert (
        line(
            WARN,
            "gpu3",
            "siblings",
            "matmul bfloat16 161.7 TFLOP/s = 70% of the median of its 8 NVIDIA A100-SXM4-80GB (named below 85%)",  # noqa: E501
        )
        in text.splitlines()
    )
    assert "what to do: slower than its siblings: check its clocks" in text
    assert text.count("what to do: slower than its siblings") == 1


def test_kernel_log_xids_land_on_their_gpu_and_unreadable_logs_are_said() -> None:
    log = ["[  12.3] NVRM: Xid (PCI:0000:11:00): 48, pid=77, name=python, DBE (0x...)"]
    final, text, _ = FakeMachine("a100x8", kernel_log=log).verify(level="quick")
    assert final == FAIL
    assert (
        line(
            FAIL,
            "gpu1",
            "xid",
            "Xid 48 in the kernel log since boot (0000:11:00): double-bit ECC error",
        )
        in text.splitlines()
    )
    assert "what to do: reset the GPU when idle (sudo nvidia-smi -r -i 1) or reboot" in text
    _, text, _ = FakeMachine("a100x8", kernel_log="dmesg: Operation not permitted").verify(
        level="quick"
    )
    assert (
        line(
            "INFO", "machine", "kernel log", "Xid history not read: dmesg: Operation not permitted"
        )
        in text.splitlines()
    )


def test_quick_level_starts_no_process() -> None:
    box = FakeMachine("a100x8")
    final, _, checks = box.verify(level="quick", expect_gpus=8)
    assert final == PASS and box.started == []
    assert not any(c.name in ("pcie link", "throttle", "backend") for c in checks)


def test_json_document_has_a_record_per_gpu_with_measured_values() -> None:
    box = FakeMachine("x8_gen3_under_load")
    final, _, checks = box.verify(expect_gpus=8)
    document = verify.as_document(checks, final, box.seen, "host-a")
    assert document["document"] == verify.DOCUMENT_KIND and document["exit_code"] == 1
    gpu5 = document["gpus"][5]
    assert gpu5["verdict"] == FAIL and gpu5["uuid"] == "GPU-00000005-fake"
    link = next(c for c in gpu5["checks"] if c["name"] == "pcie link")
    assert link["value"] == {
        "gen": 3,
        "width": 8,
        "gpu_max_gen": 4,
        "slot_max_gen": 4,
        "max_width": 16,
    }
    assert gpu5["health"]["remapped_rows"] == {"value": (0, 0, 0, 0), "missing": None}
    json.dumps(document)


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-40GB", "A100 40GB SXM"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
        ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
        ("Tesla T4", "T4"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("Tesla V100-SXM2-16GB", "V100 SXM2"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
    ],
)
def test_datasheet_matches_the_names_nvml_reports(name: str, model: str) -> None:
    found = verify.datasheet_for(name)
    assert found is not None and found["model"] == model


def test_report_shows_a_per_gpu_table_for_verify_results(tmp_path: Path) -> None:
    from bench import cli

    box = FakeMachine("three_of_four_a10g")
    final, _, checks = box.verify(level="quick", expect_gpus=4)
    (tmp_path / "verify-host-a.json").write_text(verify.as_json(checks, final, box.seen, "host-a"))
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Verify results, per GPU" in markdown
    assert "| host-a | machine | - | FAIL | gpu count: FAIL | FAIL (quick) |" in markdown
    assert "| host-a | gpu2 | NVIDIA A10G | PASS | - | FAIL (quick) |" in markdown


def test_real_processes_run_in_parallel_and_a_stuck_one_is_stopped(tmp_path: Path) -> None:
    import sys

    quick = verify_measure.Step(
        "probe", [sys.executable, "-c", 'print(\'{"device_type": "CPU"}\')']
    )
    stuck = verify_measure.Step("probe", [sys.executable, "-c", "import time; time.sleep(60)"])
    plans = [
        verify_measure.TargetPlan("gpu0", None, {}, [quick]),
        verify_measure.TargetPlan("gpu1", None, {}, [stuck]),
    ]
    runs = verify_measure.run_plans(
        plans, Seams(), verify_measure.LoadMonitor(None), tmp_path, timeout_s=2.0
    )
    assert verify_measure.probe_result(runs["gpu0"][0]) == {"device_type": "CPU"}
    assert runs["gpu1"][0].exit_code is None
    assert "was stopped" in verify_measure.probe_result(runs["gpu1"][0])["error"]


def test_metadata_is_asked_only_where_dmi_says_ec2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(imds.IMDS_URL_ENV, raising=False)
    monkeypatch.setattr(verify_measure, "DMI_FILES", ("/nonexistent/sys_vendor",))
    assert not verify_measure.looks_like_ec2()
    monkeypatch.setenv(imds.IMDS_URL_ENV, "http://127.0.0.1:9")
    assert verify_measure.looks_like_ec2()


def test_no_xid_source_at_all_is_said_not_passed_silently() -> None:
    box = FakeMachine("a100x8", kernel_log="dmesg: Operation not permitted")
    box.fake = FakeNvml("healthy")  # a card whose NVML refuses Xid event registration
    final, text, _ = box.verify(level="quick", expect_gpus=1)
    assert final == PASS
    assert (
        line("INFO", "gpu0", "xid", "no Xid source: NVML events not supported, kernel log unread")
        in text.splitlines()
    )
    assert box.fake.freed_sets == 1


# Every judging branch, each on a named scenario of tests/fakes/nvml.py: the options, the exact
# line(s) the branch prints (with "what to do" where it advises) and the verdict it leads to.
QUICK: dict[str, object] = {"level": "quick", "expect_gpus": 1}
FULL: dict[str, object] = {"expect_gpus": 1}
A100 = "NVIDIA A100-SXM4-80GB"
NOT_COUNTED = "not counted: no NVIDIA driver answers (NVML did not start);"
BRANCHES: dict[str, tuple[dict[str, object], list[tuple[str, str, str, str]], str]] = {
    "no_driver": (
        QUICK,
        [
            (
                FAIL,
                "machine",
                "nvml",
                "no NVIDIA GPU usable: NVML did not start: NVML Shared "
                "Library Not Found; no NVIDIA driver is installed here (libnvidia-ml.so not found)",
            ),
            (
                "",
                "",
                "",
                "what to do: install the NVIDIA driver (ansible-playbook setup.yml) and reboot",
            ),
            (WARN, "machine", "gpu count", f"{NOT_COUNTED} 1 expected (--expect-gpus 1)"),
            (
                "",
                "",
                "",
                "what to do: install the NVIDIA driver (ansible-playbook setup.yml) and "
                "reboot, then verify again",
            ),
        ],
        FAIL,
    ),
    "no_gpu_found": (
        QUICK,
        [
            ("INFO", "machine", "nvml", "NVML answers: NVML found no NVIDIA GPU"),
            (
                FAIL,
                "machine",
                "gpu count",
                "0 of 1 expected GPUs (--expect-gpus 1): 1 missing; NVML sees none",
            ),
        ],
        FAIL,
    ),
    "ecc_off": (
        QUICK,
        [
            (WARN, "gpu0", "ecc", "ECC is off: memory errors go undetected"),
            ("", "", "", "what to do: sudo nvidia-smi -e 1, then reboot"),
        ],
        WARN,
    ),
    "ecc_lifetime_only": (
        QUICK,
        [
            (
                WARN,
                "gpu0",
                "ecc",
                "no uncorrected ECC error since the driver loaded, 3 in the card's lifetime",
            )
        ],
        WARN,
    ),
    "ecc_mode_unreadable": (
        QUICK,
        [(WARN, "gpu0", "ecc", "ECC mode could not be read: Insufficient Permissions")],
        WARN,
    ),
    "ecc_counters_unreadable": (
        QUICK,
        [
            (
                WARN,
                "gpu0",
                "ecc",
                "ECC on; uncorrected error counters not read (since the driver "
                "loaded: Unknown Error; lifetime: Unknown Error)",
            ),
            ("", "", "", "what to do: nvidia-smi -q -d ECC"),
        ],
        WARN,
    ),
    "ecc_lifetime_unreadable": (
        QUICK,
        [
            (
                WARN,
                "gpu0",
                "ecc",
                "ECC on, 0 since the driver loaded; uncorrected error counters "
                "not read (lifetime: Unknown Error)",
            )
        ],
        WARN,
    ),
    "ecc_errors_lifetime_unreadable": (
        QUICK,
        [
            (
                FAIL,
                "gpu0",
                "ecc",
                "4 uncorrected ECC error(s) since the driver loaded (the lifetime count not read)",
            )
        ],
        FAIL,
    ),
    "retired_pages_pending": (
        QUICK,
        [(FAIL, "gpu0", "retired pages", "a page retirement is pending")],
        FAIL,
    ),
    "retired_pages_unreadable": (
        QUICK,
        [(WARN, "gpu0", "retired pages", "could not be read: Unknown Error")],
        WARN,
    ),
    "row_remap_unreadable": (
        QUICK,
        [(WARN, "gpu0", "row remap", "could not be read: Unknown Error")],
        WARN,
    ),
    "persistence_unreadable": (
        QUICK,
        [
            (
                WARN,
                "gpu0",
                "persistence",
                "persistence mode could not be read: Insufficient Permissions",
            )
        ],
        WARN,
    ),
    "cuda_visible_empty": (
        QUICK,
        [
            (
                FAIL,
                "machine",
                "cuda visible",
                "CUDA_VISIBLE_DEVICES='' hides every GPU: runs "
                "started from this shell compute on the CPU",
            ),
            (
                "",
                "",
                "",
                "what to do: unset CUDA_VISIBLE_DEVICES (or set it to the GPUs to use, "
                "e.g. CUDA_VISIBLE_DEVICES=0), also in ~/.bashrc and the Jupyter kernel's "
                "environment",
            ),
        ],
        FAIL,
    ),
    "cuda_visible_subset": (
        {"level": "quick", "expect_gpus": 2},
        [
            (
                "INFO",
                "machine",
                "cuda visible",
                "CUDA_VISIBLE_DEVICES='1': runs see only those GPUs (verify checks all)",
            )
        ],
        PASS,
    ),
    "kernel_xid_unplaced": (
        QUICK,
        [
            (
                FAIL,
                "machine",
                "xid",
                "Xid 48 in the kernel log since boot (0000:99:00): double-bit ECC error",
            )
        ],
        FAIL,
    ),
    "slot_limits_link": (
        FULL,
        [
            (
                WARN,
                "gpu0",
                "pcie link",
                "x16 Gen 4 under load: the slot limits it (the GPU can do Gen 5)",
            ),
            ("", "", "", "what to do: move the card to a slot of its generation"),
        ],
        WARN,
    ),
    "link_maxima_unsupported": (
        FULL,
        [
            (
                "INFO",
                "gpu0",
                "pcie link",
                "x16 Gen 4 under load; what the GPU and slot can do was "
                "not read (GPU max gen: not supported)",
            )
        ],
        PASS,
    ),
    "link_maxima_unreadable": (
        FULL,
        [
            (
                WARN,
                "gpu0",
                "pcie link",
                "x16 Gen 4 under load; what the GPU and slot can do was "
                "not read (max width: Unknown Error)",
            )
        ],
        WARN,
    ),
    "narrow_link_maxima_unreadable": (
        FULL,
        [
            (
                FAIL,
                "gpu0",
                "pcie link",
                "x8 Gen 4 under load; this GPU and slot can do x16 (GPU max gen not read: "
                "Unknown Error)",
            )
        ],
        FAIL,
    ),
    "link_unreported_under_load": (
        FULL,
        [("INFO", "gpu0", "pcie link", "link generation and width not reported under load")],
        PASS,
    ),
    "replay_high": (
        FULL,
        [
            (WARN, "gpu0", "pcie replay", "250 replays since boot (WARN above 100)"),
            ("", "", "", "what to do: a marginal link: reseat the card, check the riser"),
        ],
        WARN,
    ),
    "replay_unreadable": (
        FULL,
        [(WARN, "gpu0", "pcie replay", "the PCIe replay counter could not be read: Unknown Error")],
        WARN,
    ),
    "throttle_unreadable": (
        FULL,
        [(WARN, "gpu0", "throttle", "clock event reasons not reported in 20 readings under load")],
        WARN,
    ),
    "thermal_short": (
        FULL,
        [
            (
                WARN,
                "gpu0",
                "throttle",
                "hw_thermal_slowdown held 5% of the load (1 of 20 readings, "
                "about 0.1 s of 2.0 s) (harmless: sw_power_cap 100%); SM clock mean 1931 MHz, max "
                "1980 MHz (FAIL from 20%)",
            )
        ],
        WARN,
    ),
    "hot_near_slowdown": (
        FULL,
        [
            (
                WARN,
                "gpu0",
                "temperature",
                "84 C under load, 3 C from the slowdown threshold (87 C; WARN within 5 C)",
            )
        ],
        WARN,
    ),
    "slowdown_unsupported": (
        FULL,
        [
            (
                "INFO",
                "gpu0",
                "temperature",
                "66 C under load; slowdown threshold not read: not supported",
            )
        ],
        PASS,
    ),
    "temperature_unreadable": (
        FULL,
        [("INFO", "gpu0", "temperature", "not reported under load")],
        PASS,
    ),
    "lost_under_load": (
        FULL,
        [
            (FAIL, "gpu0", "nvml", "the GPU stopped answering NVML under load: GPU is lost"),
            (WARN, "gpu0", "load", "no NVML readings were taken under load"),
        ],
        FAIL,
    ),
    "unknown_card": (
        FULL,
        [
            (
                WARN,
                "gpu0",
                "throughput",
                "NVIDIA Imaginary X1 is not in bench/facts/gpus.json; "
                "measured float32 18.9 TFLOP/s, bfloat16 231.0 TFLOP/s, copy 1712 GB/s",
            )
        ],
        WARN,
    ),
    "slow_matmul": (
        FULL,
        [
            (
                WARN,
                "gpu0",
                "matmul float32",
                "7.0 TFLOP/s = 36% of the A100 80GB SXM datasheet (19.5), n=8192",
            ),
            (
                "",
                "",
                "",
                "what to do: check clocks, power limit and throttling; nvidia-smi -q -d "
                "PERFORMANCE",
            ),
            (
                FAIL,
                "gpu0",
                "matmul bfloat16",
                "60.0 TFLOP/s = 19% of the A100 80GB SXM datasheet (312), n=8192",
            ),
        ],
        FAIL,
    ),
    "t4_without_bfloat16": (
        FULL,
        [
            (PASS, "gpu0", "matmul float32", "7.0 TFLOP/s = 86% of the T4 datasheet (8.1), n=8192"),
            (PASS, "gpu0", "memory copy", "250 GB/s = 78% of the T4 datasheet (320 GB/s)"),
        ],
        PASS,
    ),
    "second_gpu_on_cpu": (
        {"expect_gpus": 2},
        [
            (
                FAIL,
                "gpu1",
                "backend",
                f"jax computed on the CPU although {A100} is present: JAX has a CUDA plugin but "
                "found no usable GPU: CUDA libraries missing or too old for the driver",
            )
        ],
        FAIL,
    ),
    "slow_copy": (
        FULL,
        [
            (
                WARN,
                "gpu0",
                "memory copy",
                "1000 GB/s = 49% of the A100 80GB SXM datasheet (2039 GB/s)",
            ),
            ("", "", "", "what to do: another process may share the GPU: nvidia-smi"),
        ],
        WARN,
    ),
    "cpu_only_backend_build": (
        FULL,
        [
            (
                FAIL,
                "gpu0",
                "backend",
                f"jax computed on the CPU although {A100} is present: the "
                "installed JAX is the CPU build (no CUDA plugin)",
            ),
            (
                "",
                "",
                "",
                "what to do: pip install -U 'jax[cuda12]' (or jax[cuda13] with a CUDA 13 "
                "driver), then check python -c 'import jax; print(jax.devices())'",
            ),
        ],
        FAIL,
    ),
    "cuda_libraries_missing": (
        FULL,
        [
            (
                FAIL,
                "gpu0",
                "backend",
                f"jax computed on the CPU although {A100} is present: JAX "
                "has a CUDA plugin but found no usable GPU: CUDA libraries missing or too old for "
                "the driver",
            )
        ],
        FAIL,
    ),
    "probe_crashed": (
        FULL,
        [
            (FAIL, "gpu0", "backend", "jax could not run: ImportError: libcudart.so.12: not found"),
            ("", "", "", "what to do: check the jax install: python -m bench.machine.probe"),
        ],
        FAIL,
    ),
    "workload_failed": (
        FULL,
        [
            (
                FAIL,
                "gpu0",
                "workload",
                "the text's reuters model did not train: CUDA_ERROR_OUT_OF_MEMORY",
            )
        ],
        FAIL,
    ),
    "h100_at_reference": (
        FULL,
        [
            (
                PASS,
                "gpu0",
                "reference",
                "103% of this project's reference for NVIDIA H100 80GB "
                "HBM3 (77,506 samples/s, h100-80gb-hbm3-jax-reuters-fit.json)",
            )
        ],
        PASS,
    ),
    "h100_below_reference": (
        FULL,
        [
            (
                WARN,
                "gpu0",
                "reference",
                "52% of this project's reference for NVIDIA H100 80GB "
                "HBM3 (77,506 samples/s, h100-80gb-hbm3-jax-reuters-fit.json)",
            ),
            ("", "", "", "what to do: compare `dlbench report` of both results"),
        ],
        WARN,
    ),
}


@pytest.mark.parametrize("scenario", sorted(BRANCHES))
def test_each_judging_branch_prints_its_line_and_verdict(scenario: str) -> None:
    options, expected, final = BRANCHES[scenario]
    got, text, _ = FakeMachine(scenario).verify(**options)
    lines = text.splitlines()
    for status, scope, check, detail in expected:
        assert line(status, scope, check, detail) in lines, "\n".join(lines)
    assert got == final, text
    assert lines[-1] == f"verdict: {final}"


def test_every_machine_scenario_is_asserted_somewhere() -> None:
    here = Path(__file__).read_text()
    unasserted = [name for name in MACHINES if f'"{name}"' not in here]
    assert unasserted == []


def test_the_tensorflow_cpu_build_is_named_with_its_cuda_install() -> None:
    _, text, _ = FakeMachine("cpu_only_backend_build").verify(backend="tensorflow", **FULL)
    lines = text.splitlines()
    assert (
        line(
            FAIL,
            "gpu0",
            "backend",
            f"tensorflow computed on the CPU although {A100} is "
            "present: the installed TensorFlow is a CPU-only build (tensorflow-cpu, or a "
            "wheel without CUDA)",
        )
        in lines
    )
    assert "what to do: pip install 'tensorflow[and-cuda]' (make: TF_EXTRA=tensorflow-cuda)" in text


def test_no_driver_with_an_expected_gpu_never_advises_a_new_card() -> None:
    _, text, _ = FakeMachine("no_driver").verify(level="quick", expect_gpus=1)
    assert "reseat" not in text and "replac" not in text


@pytest.mark.parametrize(
    ("scenario", "never"),
    [
        ("ecc_counters_unreadable", "0 uncorrected"),
        ("replay_unreadable", "replays since boot"),
        ("retired_pages_unreadable", "no page retirement pending"),
        ("throttle_unreadable", "no thermal, power-brake or hardware slowdown"),
        ("link_maxima_unreadable", "the maximum of GPU and slot"),
        ("persistence_unreadable", "persistence mode on"),
    ],
)
def test_no_line_prints_a_value_that_was_not_read(scenario: str, never: str) -> None:
    """A counter that errors is never printed as a number, nor judged PASS or FAIL."""
    _, text, checks = FakeMachine(scenario).verify(**FULL)
    assert never not in text
    not_read = [c for c in checks if c.state == verify.UNREAD]
    assert not_read and all(c.status in (WARN, "INFO") and c.value is None for c in not_read)


@pytest.mark.parametrize(
    ("scenario", "never", "unread_line"),
    [
        (
            "driver_version_unreadable",
            "None",
            line(INFO, "machine", "driver version", "driver version not read from NVML"),
        ),
        ("gpu_name_unreadable", "this CPU", None),
        (
            "gpu_count_unreadable",
            nvml.NO_GPU_FOUND,
            line(WARN, "machine", "nvml", nvml.COUNT_UNREAD),
        ),
        (
            "handle_unreadable",
            "replac",
            line(WARN, "gpu0", "nvml", "nothing read from this GPU: NVML gave no handle for GPU 0"),
        ),
    ],
)
def test_a_failed_system_read_is_said_never_printed_or_judged(
    scenario: str, never: str, unread_line: str | None
) -> None:
    """The driver, the count, a name or a handle that NVML refused: not read, not a verdict."""
    got, text, checks = FakeMachine(scenario).verify(level="quick", expect_gpus=1)
    assert never not in text and "reseat" not in text, text
    if unread_line is not None:
        assert unread_line in text.splitlines(), text
    counts = verify.signal_counts(checks)
    assert counts[verify.UNREAD] >= 1 or scenario == "gpu_name_unreadable", text
    assert got in (WARN, PASS), text
    assert all(c.value is None for c in checks if c.state == verify.UNREAD)


def test_an_unread_gpu_count_says_nvml_started_and_never_asks_for_a_driver() -> None:
    _, text, _ = FakeMachine("gpu_count_unreadable").verify(level="quick", expect_gpus=1)
    expected = f"not counted: {nvml.COUNT_UNREAD}; 1 expected (--expect-gpus 1)"
    assert line(WARN, "machine", "gpu count", expected) in text.splitlines(), text
    assert "install the NVIDIA driver" not in text and "did not start" not in text


def test_an_unread_gpu_name_is_said_as_not_read() -> None:
    _, text, _ = FakeMachine("gpu_name_unreadable").verify(level="quick", expect_gpus=1)
    assert "1x GPU 0 (name not read)" in text, text


def test_an_unread_signal_cannot_be_made_a_pass() -> None:
    with pytest.raises(ValueError, match="not read"):
        verify.Check("ecc", PASS, "x", state=verify.UNREAD)
    with pytest.raises(ValueError, match="not read"):
        verify.Check("ecc", FAIL, "x", state=verify.UNREAD)


def test_json_records_each_signals_state_and_the_counts() -> None:
    box = FakeMachine("ecc_counters_unreadable")
    final, text, checks = box.verify(**QUICK)
    document = verify.as_document(checks, final, box.seen, "host-a")
    ecc = next(c for c in document["gpus"][0]["checks"] if c["name"] == "ecc")
    assert ecc["state"] == "unread" and ecc["status"] == WARN and ecc["value"] is None
    count = next(c for c in document["machine"] if c["name"] == "gpu count")
    assert count["state"] == "read" and count["value"] == {"found": 1, "expected": 1}
    assert document["signals"] == {
        "read": sum(c.state == "read" for c in checks),
        "unread": sum(c.state == "unread" for c in checks),
    }
    assert document["signals"]["unread"] >= 1
    assert f"signals: {document['signals']['read']} read, 1 could not be read" in text


def test_without_an_expected_count_missing_nvml_and_the_count_are_information() -> None:
    final, text, _ = FakeMachine("no_driver").verify(level="quick")
    lines = text.splitlines()
    assert (
        line(
            "INFO", "machine", "gpu count", f"{NOT_COUNTED} no expected count: pass --expect-gpus N"
        )
        in lines
    )
    assert lines[1].startswith(line("INFO", "machine", "nvml", "no NVIDIA GPU usable: NVML"))
    assert final == PASS
    final, text, _ = FakeMachine("ecc_off").verify(level="quick")
    assert (
        line(
            "INFO",
            "machine",
            "gpu count",
            f"1 GPU(s): 1x {A100}; no expected count: pass --expect-gpus N",
        )
        in text.splitlines()
    )
    assert (
        line(
            PASS,
            "machine",
            "cuda visible",
            "CUDA_VISIBLE_DEVICES is not set: runs see all 1 GPU(s)",
        )
        in text.splitlines()
    )
    assert (
        line(
            PASS,
            "gpu0",
            "xid",
            "none (NVML events during the verify and the kernel log since boot)",
        )
        in text.splitlines()
    )


def test_no_bfloat16_line_where_the_datasheet_has_none() -> None:
    _, _, checks = FakeMachine("t4_without_bfloat16").verify(**FULL)
    assert "matmul bfloat16" not in {c.name for c in checks}


@pytest.mark.parametrize("scenario", ["second_gpu_on_cpu", "h100_at_reference"])
def test_siblings_compare_only_gpus_of_one_model_that_computed_on_a_gpu(scenario: str) -> None:
    _, _, checks = FakeMachine(scenario).verify(expect_gpus=len(MACHINES[scenario]()))
    assert "siblings" not in {c.name for c in checks}


def test_without_a_gpu_the_cpu_path_is_probed_and_said() -> None:
    final, text, _ = FakeMachine("no_driver").verify()
    lines = text.splitlines()
    assert line(PASS, "host", "backend", "jax computes on CPU") in lines
    assert (
        line(
            "INFO",
            "host",
            "throughput",
            "CPU: matmul float32 18900.0 GFLOP/s, bfloat16 231000.0 GFLOP/s, copy 1712.0 GB/s "
            "(no datasheet for CPUs)",
        )
        in lines
    )
    assert (
        line(
            PASS,
            "host",
            "workload",
            "the text's reuters model trains on CPU: 80,000 samples/s (synthetic data, fit)",
        )
        in lines
    )
    assert final == PASS


def test_a_gpu_never_probed_gets_no_backend_line() -> None:
    seen = verify.Observations("jax", "full", {}, None)
    assert verify.host_checks(seen, verify.GpuSeen("gpu0", {"name": A100})) == []


def test_a_counter_verify_never_asked_for_is_said_not_read() -> None:
    gpu = verify.GpuSeen("gpu0", {"name": A100}, health={})
    check = verify.reading_line(gpu, "pcie_replay", "pcie replay")
    assert check is not None
    assert (check.status, check.state, check.detail) == (
        WARN,
        verify.UNREAD,
        "could not be read: not read",
    )


def test_rates_measured_on_the_cpu_are_not_held_against_the_gpus_datasheet() -> None:
    _, _, checks = FakeMachine("cpu_only_backend_build").verify(**FULL)
    names = {c.name for c in checks if c.scope == "gpu0"}
    assert "throughput" in names and not names & {"matmul float32", "memory copy"}
