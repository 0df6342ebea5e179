"""Instance metadata over real HTTP, price resolution, and the cost arithmetic."""

from __future__ import annotations

import time

import pytest

from bench.facts.catalog import Catalog
from bench.machine import imds
from bench.machine.fingerprint import diagnose
from bench.results import cost
from tests.fakes.imds import ImdsServer


def test_imds_v2_lookup_uses_a_token() -> None:
    with ImdsServer("ok", "g6.xlarge", "us-west-2") as server:
        assert imds.lookup(server.url) == imds.Placement("g6.xlarge", "us-west-2")
    put = server.requests[0]
    assert put[:2] == ("PUT", "/latest/api/token")
    assert put[2]["x-aws-ec2-metadata-token-ttl-seconds"] == "60"
    assert all(r[2].get("x-aws-ec2-metadata-token") for r in server.requests[1:])


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("no_token", "gave no IMDSv2 token"), ("v1_only", "HTTP Error 403"), ("slow", "timed out")],
)
def test_imds_failures_are_reasons_and_quick(mode: str, reason: str) -> None:
    with ImdsServer(mode) as server:
        started = time.monotonic()
        result = imds.lookup(server.url, timeout=0.3)
        elapsed = time.monotonic() - started
    assert isinstance(result, str) and reason in result
    assert elapsed < 1.5


def test_nothing_listening_is_a_reason() -> None:
    with ImdsServer() as server:
        url = server.url
    assert "not on EC2" in str(imds.lookup(url, timeout=0.3))


def priced(result: cost.Pricing | str) -> cost.Pricing:
    assert isinstance(result, cost.Pricing), result
    return result


def test_price_resolution_order() -> None:
    catalog = Catalog.packaged()
    never = lambda: pytest.fail("instance metadata must not be asked")  # noqa: E731
    assert (
        priced(
            cost.resolve_pricing(cost.PriceInputs(price_per_hour=2.5), catalog, never)
        ).usd_per_hour
        == 2.5
    )
    g4dn = priced(
        cost.resolve_pricing(cost.PriceInputs(instance_type="g4dn.xlarge"), catalog, never)
    )
    assert g4dn.usd_per_hour == 0.526 and "us-east-1" in g4dn.source
    with ImdsServer("ok", "g5.xlarge", "us-east-1") as server:
        from_metadata = priced(
            cost.resolve_pricing(cost.PriceInputs(), catalog, lambda: imds.lookup(server.url))
        )
    assert from_metadata.usd_per_hour == 1.006 and "EC2 metadata" in from_metadata.source
    off_ec2 = cost.resolve_pricing(cost.PriceInputs(ask_imds=False), catalog, never)
    assert isinstance(off_ec2, str) and "--price-per-hour" in off_ec2
    watts = priced(
        cost.resolve_pricing(
            cost.PriceInputs(ask_imds=False, electricity_price=0.3, amortisation_per_hour=0.1),
            catalog,
            never,
        )
    )
    assert watts.usd_per_hour is None and watts.electricity_usd_per_kwh == 0.3


def test_unpriced_region_says_so() -> None:
    result = cost.resolve_pricing(
        cost.PriceInputs(instance_type="g5.xlarge", region="eu-west-3"), Catalog.packaged()
    )
    assert isinstance(result, str) and "no on-demand price for eu-west-3" in result


def priced_run() -> dict:
    return {
        "timing": {"end_to_end_s": 36.0},
        "epochs": [{"wall_s": 2.0}, {"wall_s": 1.0}, {"wall_s": 1.0}, {"wall_s": 1.0}],
        "throughput": {"steady_samples_per_s": 20_000.0},
        "target": {"reached_s": 3.6},
        "telemetry": {"devices": [{"energy_j": 3_600.0}]},
    }


def test_cost_per_run_epoch_samples_and_target() -> None:
    result = cost.run_cost(priced_run(), cost.Pricing(3.6, "test", "2026-11-26"))
    # $3.6/h is $0.001/s
    assert result["run_usd"] == pytest.approx(0.036)
    assert result["epoch_usd"] == pytest.approx(0.00125)
    assert result["per_million_samples_usd"] == pytest.approx(0.05)
    assert result["to_target_usd"] == pytest.approx(0.0036)


def test_electricity_cost_from_measured_energy() -> None:
    pricing = cost.Pricing(
        None, "electricity", None, electricity_usd_per_kwh=0.36, amortisation_usd_per_hour=0.36
    )
    result = cost.run_cost(priced_run(), pricing)
    # 3600 J over 36 s = 100 W; 0.1 kW * $0.36/kWh = $0.036/h, + $0.36/h amortisation
    assert result["run_usd"] == pytest.approx((0.036 + 0.36) * 36 / 3600)
    assert "host power not measured" in result["basis"]
    no_energy = {**priced_run(), "telemetry": {"devices": []}}
    assert cost.run_cost(no_energy, pricing)["available"] is False


def test_no_price_is_recorded_as_a_reason() -> None:
    assert cost.run_cost(priced_run(), "no price: pass --price-per-hour") == {
        "available": False,
        "reason": "no price: pass --price-per-hour",
    }


GPU = [{"name": "NVIDIA A10G"}]


@pytest.mark.parametrize(
    ("backend", "cause"),
    [
        ({"name": "tensorflow", "device_type": "CPU", "cuda_build": False}, "CPU-only build"),
        (
            {"name": "tensorflow", "device_type": "CPU", "cuda_build": True},
            "CUDA/cuDNN libraries are missing",
        ),
        ({"name": "jax", "device_type": "CPU", "cuda_build": False}, "CPU build (no CUDA plugin)"),
        ({"name": "torch", "device_type": "CPU", "cuda_build": False}, "CPU-only wheel"),
    ],
)
def test_gpu_present_but_cpu_used_is_diagnosed(backend: dict, cause: str) -> None:
    found = diagnose(GPU, backend)
    assert found is not None
    assert "NVIDIA A10G" in found["problem"] and cause in found["cause"]
    assert "pip install" in found["fix"]


def test_no_diagnosis_when_all_is_well() -> None:
    assert diagnose(GPU, {"name": "jax", "device_type": "GPU"}) is None
    assert diagnose([], {"name": "jax", "device_type": "CPU"}) is None
