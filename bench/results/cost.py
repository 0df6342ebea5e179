"""What a run costs: a price per hour (user, catalog or meter) times the measured time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.facts.catalog import Catalog, CatalogError
from bench.machine import imds
from bench.results.document import telemetry_figures

JOULES_PER_KWH = 3_600_000


@dataclass(frozen=True)
class Pricing:
    """How this machine is priced; usd_per_hour None means electricity (per measured kWh)."""

    usd_per_hour: float | None
    source: str
    as_of: str | None
    electricity_usd_per_kwh: float | None = None
    amortisation_usd_per_hour: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "usd_per_hour": self.usd_per_hour,
            "source": self.source,
            "as_of": self.as_of,
            "electricity_usd_per_kwh": self.electricity_usd_per_kwh,
            "amortisation_usd_per_hour": self.amortisation_usd_per_hour,
        }


@dataclass(frozen=True)
class PriceInputs:
    """What the user said about this machine's price (dlbench run's cost options)."""

    price_per_hour: float | None = None
    instance_type: str | None = None
    region: str | None = None
    ask_imds: bool = True
    electricity_price: float | None = None
    amortisation_per_hour: float = 0.0


class RegionError(ValueError):
    """A region EC2 does not have; the message gives examples of real ones."""


def ec2_regions() -> tuple[str, ...]:
    """EC2's regions as botocore's bundled endpoint data lists them (no network call)."""
    import botocore.session

    return tuple(botocore.session.get_session().get_available_regions("ec2"))


def check_region(region: str, known: tuple[str, ...] | None = None) -> None:
    """RegionError unless region is one of EC2's (a run would go on without a price)."""
    regions = ec2_regions() if known is None else known
    if region not in regions:
        raise RegionError(
            f"--region {region!r} is not an EC2 region (botocore knows {len(regions)}, e.g. "
            f"{', '.join(sorted(regions)[:3])}); pass one of them, e.g. us-east-1"
        )


def resolve_pricing(
    given: PriceInputs, catalog: Catalog | None = None, lookup: Any = imds.lookup
) -> Pricing | str:
    """--price-per-hour, else --instance-type/--region, else instance metadata, else electricity."""
    if given.price_per_hour is not None:
        return Pricing(given.price_per_hour, "--price-per-hour", None)
    instance_type, region, how = given.instance_type, given.region, "--instance-type/--region"
    if instance_type is None and given.ask_imds:
        placement = lookup()
        if isinstance(placement, imds.Placement):
            instance_type, region, how = placement.instance_type, placement.region, "EC2 metadata"
    if instance_type is not None:
        catalog = catalog or Catalog.load()
        try:
            price = catalog.on_demand(instance_type, region or "us-east-1")
        except CatalogError as error:
            return f"{instance_type} ({how}): {error}"
        if price.usd_per_hour is None:
            return f"{instance_type} in {region} ({how}): {price.basis}"
        return Pricing(
            price.usd_per_hour,
            f"{instance_type} {region or 'us-east-1'} on-demand ({how}); {price.basis}",
            price.as_of,
        )
    if given.electricity_price is not None:
        return Pricing(
            None,
            "electricity (--electricity-price) x measured GPU energy",
            None,
            given.electricity_price,
            given.amortisation_per_hour,
        )
    return (
        "no price: pass --price-per-hour, --instance-type/--region, or "
        "--electricity-price for a workstation"
    )


def run_cost(run: Mapping[str, Any], pricing: Pricing | str) -> dict[str, Any]:
    """$ per run, per epoch, per million training samples and to the target accuracy."""
    if isinstance(pricing, str):
        return {"available": False, "reason": pricing}
    timing = run["timing"]
    seconds = timing.get("end_to_end_s")
    epochs = run["epochs"]
    samples_per_s = (run.get("throughput") or {}).get("steady_samples_per_s")
    reached_s = (run.get("target") or {}).get("reached_s")
    if pricing.usd_per_hour is not None:
        rate_per_s = pricing.usd_per_hour / 3600
        basis = "time x price per hour"
    else:
        energy = telemetry_figures(run)["energy_j"]
        if energy is None or not seconds:
            return {
                "available": False,
                "reason": "electricity pricing needs measured GPU energy "
                "(NVML) and there is none; pass --price-per-hour",
                **pricing.describe(),
            }
        # Energy is the GPU board's only (NVML): host CPU, memory and PSU losses are not in it.
        watts = energy / seconds
        assert pricing.electricity_usd_per_kwh is not None
        rate_per_s = (
            watts * pricing.electricity_usd_per_kwh / JOULES_PER_KWH
            + pricing.amortisation_usd_per_hour / 3600
        )
        basis = (
            f"GPU energy {energy:.0f} J over {seconds:.1f} s ({watts:.0f} W mean) x "
            "electricity price, + amortisation; host power not measured"
        )

    def dollars(s: float | None) -> float | None:
        return None if s is None else s * rate_per_s

    epoch_s = sum(e["wall_s"] for e in epochs) / len(epochs) if epochs else None
    return {
        "available": True,
        **pricing.describe(),
        "basis": basis,
        "run_usd": dollars(seconds),
        "epoch_usd": dollars(epoch_s),
        "per_million_samples_usd": dollars(1e6 / samples_per_s) if samples_per_s else None,
        "to_target_usd": dollars(reached_s),
    }
