"""The verdict logic on recorded observations, and the datasheet table."""

from __future__ import annotations

import dataclasses

import pytest

from bench import verify
from bench.verify import FAIL, INFO, PASS, WARN, Observations

H100 = {
    "index": 0,
    "name": "NVIDIA H100 80GB HBM3",
    "driver_version": "580.95.05",
    "cuda_driver_version": "13.0",
}


def gpu_probe(fp32: float = 50.0, bf16: float = 700.0, copy: float = 2900.0) -> dict:
    return {
        "backend": "jax",
        "device_type": "GPU",
        "device_name": "NVIDIA H100 80GB HBM3",
        "matmul": {"float32": {"n": 8192, "tflops": fp32}, "bfloat16": {"n": 8192, "tflops": bf16}},
        "copy_gbps": copy,
    }


def healthy(**changes) -> Observations:
    seen = Observations(
        backend="jax",
        expect_gpu=True,
        nvml_reason=None,
        gpus=[H100],
        probe=gpu_probe(),
        throttle_seen=["sw_power_cap"],
        clocks_mhz={"mean": 1900.0, "max": 1980.0},
    )
    return dataclasses.replace(seen, **changes)


def statuses(seen: Observations) -> dict[str, str]:
    return {c.name: c.status for c in verify.judge(seen)}


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


def test_healthy_h100_passes() -> None:
    checks = verify.judge(healthy())
    assert {c.name: c.status for c in checks} == {
        "driver": PASS,
        "backend": PASS,
        "matmul float32": PASS,
        "matmul bfloat16": PASS,
        "memory copy": PASS,
        "clocks": PASS,
    }
    assert verify.verdict(checks) == PASS
    matmul = next(c for c in checks if c.name == "matmul bfloat16")
    assert "71% of the H100 SXM datasheet (989.5)" in matmul.detail


def test_slow_card_warns_then_fails() -> None:
    assert statuses(healthy(probe=gpu_probe(bf16=400.0)))["matmul bfloat16"] == WARN
    assert statuses(healthy(probe=gpu_probe(bf16=100.0)))["matmul bfloat16"] == FAIL
    assert statuses(healthy(probe=gpu_probe(copy=1500.0)))["memory copy"] == WARN


def test_thermal_throttling_warns_with_a_fix() -> None:
    checks = verify.judge(healthy(throttle_seen=["hw_thermal_slowdown", "sw_power_cap"]))
    clocks = next(c for c in checks if c.name == "clocks")
    assert clocks.status == WARN and "hw_thermal_slowdown" in clocks.detail
    assert clocks.fix is not None and "cooling" in clocks.fix


def test_gpu_present_but_backend_on_cpu_fails() -> None:
    cpu_probe = {
        "device_type": "CPU",
        "device_name": "CPU",
        "matmul": {"float32": {"n": 1024, "tflops": 0.1}},
        "copy_gbps": 3.0,
    }
    checks = verify.judge(healthy(probe=cpu_probe))
    backend = next(c for c in checks if c.name == "backend")
    assert backend.status == FAIL
    assert "computed on the CPU although NVIDIA H100 80GB HBM3 is present" in backend.detail
    assert verify.verdict(checks) == FAIL


def test_no_gpu_is_plain_info_unless_expected() -> None:
    cpu = healthy(
        gpus=[],
        nvml_reason="NVML did not start: no driver",
        probe={
            "device_type": "CPU",
            "device_name": "CPU",
            "matmul": {"float32": {"n": 1024, "tflops": 0.07}},
            "copy_gbps": 2.5,
        },
        expect_gpu=False,
    )
    assert statuses(cpu) == {"gpu": INFO, "backend": PASS, "throughput": INFO}
    assert verify.verdict(verify.judge(cpu)) == PASS
    expected = dataclasses.replace(cpu, expect_gpu=True)
    assert verify.verdict(verify.judge(expected)) == FAIL


def test_unknown_card_and_broken_backend() -> None:
    unknown = healthy(gpus=[{**H100, "name": "NVIDIA Quantum Z9"}])
    assert statuses(unknown)["throughput"] == WARN
    broken = healthy(probe={"error": "ImportError: no module named jax"})
    assert statuses(broken)["backend"] == FAIL


def run_record(rate: float) -> dict:
    return {
        "status": "complete",
        "throughput": {"steady_samples_per_s": rate},
        "backend": {"device_name": "NVIDIA H100 80GB HBM3"},
    }


def test_workload_against_the_reference() -> None:
    reference = {
        "gpu": "NVIDIA H100 80GB HBM3",
        "steady_samples_per_s": 100_000.0,
        "file": "r.json",
    }
    assert (
        statuses(healthy(workload=run_record(90_000.0), reference=reference))["reference"] == PASS
    )
    assert (
        statuses(healthy(workload=run_record(50_000.0), reference=reference))["reference"] == WARN
    )
    assert statuses(healthy(workload=run_record(50_000.0)))["reference"] == INFO
    failed = {"status": "failed", "error": {"message": "worker exited with code 1"}}
    assert statuses(healthy(workload=failed))["workload"] == FAIL


def test_exit_codes_follow_the_verdict() -> None:
    assert verify.EXIT_CODES == {PASS: 0, FAIL: 1, WARN: 3}
