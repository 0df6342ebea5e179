"""GPU instance types and their prices, kept as data with a source and a date (bench/facts)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

CATALOG_FILE = "catalog.json"
CATALOG_ENV = "DLSTATION_CATALOG"


def user_catalog_path() -> Path:
    """Where `dlcloud prices --refresh` writes: $DLSTATION_CATALOG or ~/.config/dlstation."""
    if os.environ.get(CATALOG_ENV):
        return Path(os.environ[CATALOG_ENV])
    return Path.home() / ".config" / "dlstation" / "catalog.json"


class CatalogError(ValueError):
    """An instance type the catalog does not know, or a malformed catalog."""


@dataclass(frozen=True)
class Price:
    """An hourly price and where it came from; estimate=True when it was not looked up."""

    usd_per_hour: float | None
    basis: str
    as_of: str
    estimate: bool = False


@dataclass(frozen=True)
class InstanceType:
    """One GPU instance type of the catalog."""

    instance_type: str
    family: str
    gpu: str
    gpu_count: int
    gpu_memory_gib: int
    vcpus: int
    on_demand: dict[str, float]
    spot: dict[str, float]

    @property
    def quota_class(self) -> str:
        """EC2 quotas count vCPUs per letter: G and VT types share one, P types another."""
        return "P" if self.family.startswith("p") else "G"


class Catalog:
    """The price catalog; load() reads the packaged file unless a path is given."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.as_of: str = data["as_of"]
        self.sources: dict[str, str] = data["sources"]
        self.spot_fraction: float = data["spot_estimate_fraction"]
        self.quota_codes: dict[str, dict[str, str]] = data["quota_codes"]
        self.types = {
            t["instance_type"]: InstanceType(
                instance_type=t["instance_type"],
                family=t["family"],
                gpu=t["gpu"],
                gpu_count=t["gpu_count"],
                gpu_memory_gib=t["gpu_memory_gib"],
                vcpus=t["vcpus"],
                on_demand=t["on_demand_usd_per_hour"],
                spot=t["spot_usd_per_hour"],
            )
            for t in data["instance_types"]
        }

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        """The given file, else a refreshed user catalog if there is one, else the packaged one."""
        chosen = path or user_catalog_path()
        if path is not None or chosen.is_file():
            text = chosen.read_text()
        else:
            text = resources.files("bench.facts").joinpath(CATALOG_FILE).read_text()
        return cls(json.loads(text))

    @classmethod
    def packaged(cls) -> Catalog:
        return cls(json.loads(resources.files("bench.facts").joinpath(CATALOG_FILE).read_text()))

    def get(self, instance_type: str) -> InstanceType:
        try:
            return self.types[instance_type]
        except KeyError:
            families = ", ".join(sorted({t.family for t in self.types.values()}))
            raise CatalogError(
                f"{instance_type!r} is not a GPU instance type in dlstation's catalog "
                f"(families: {families}); see `dlcloud offers`"
            ) from None

    def offers(self, gpu: str | None = None) -> list[InstanceType]:
        """Types whose GPU name contains `gpu` (case-insensitive), cheapest first where known."""
        chosen = [t for t in self.types.values() if gpu is None or gpu.lower() in t.gpu.lower()]
        return sorted(chosen, key=lambda t: (t.family, t.vcpus))

    def on_demand(self, instance_type: str, region: str) -> Price:
        found = self.get(instance_type).on_demand.get(region)
        if found is None:
            return Price(None, f"no on-demand price for {region} in the catalog", self.as_of)
        return Price(found, self.sources["on_demand"], self.as_of)

    def spot(self, instance_type: str, region: str) -> Price:
        """A stored spot figure, else an estimate from on-demand that says it is one."""
        found = self.get(instance_type).spot.get(region)
        if found is not None:
            return Price(found, self.sources["spot"], self.as_of)
        on_demand = self.on_demand(instance_type, region).usd_per_hour
        if on_demand is None:
            return Price(None, f"no spot or on-demand price for {region}", self.as_of, True)
        return Price(
            round(on_demand * self.spot_fraction, 4),
            f"estimate: {self.spot_fraction:.0%} of on-demand (spot moves hourly)",
            self.as_of,
            estimate=True,
        )

    def price(self, instance_type: str, region: str, spot: bool) -> Price:
        return self.spot(instance_type, region) if spot else self.on_demand(instance_type, region)

    def disk_per_hour(self, gib: int, region: str) -> float | None:
        """What a gp3 root disk of this size costs per hour there (EBS bills per GiB-month)."""
        monthly = self.data.get("ebs_gp3_usd_per_gib_month", {}).get(region)
        hours = self.data.get("hours_per_month")
        return None if monthly is None or not hours else gib * monthly / hours

    def quota_code(self, instance_type: str, spot: bool) -> str:
        market = "spot" if spot else "on-demand"
        return self.quota_codes[market][self.get(instance_type).quota_class]
