"""Refresh the price catalog: the Pricing API for on-demand, spot price history for spot."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bench.facts.catalog import Catalog
from cloud.aws import Aws, explain

PRICING_REGION = "us-east-1"  # the Pricing API answers only in a few regions
SPOT_WINDOW = timedelta(days=7)


def on_demand_price(pricing: Any, instance_type: str, region: str) -> float | None:
    """The Linux, shared-tenancy, no-license on-demand $/h of one type in one region."""
    filters = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
    }
    products = pricing.get_products(
        ServiceCode="AmazonEC2",
        Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
        MaxResults=10,
    )["PriceList"]
    for product in products:
        terms = json.loads(product).get("terms", {}).get("OnDemand", {})
        for term in terms.values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = float(dimension.get("pricePerUnit", {}).get("USD", 0))
                if usd > 0:
                    return usd
    return None


def spot_medians(ec2: Any, instance_types: list[str], now: datetime) -> dict[str, float]:
    """Median Linux spot price per type over the last week, all zones together."""
    seen: dict[str, list[float]] = {}
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=instance_types,
        ProductDescriptions=["Linux/UNIX"],
        StartTime=now - SPOT_WINDOW,
        EndTime=now,
    )
    for page in pages:
        for entry in page["SpotPriceHistory"]:
            seen.setdefault(entry["InstanceType"], []).append(float(entry["SpotPrice"]))
    return {kind: round(statistics.median(values), 4) for kind, values in seen.items()}


def refresh(
    catalog: Catalog,
    aws_for: Callable[[str], Aws],
    regions: list[str],
    now: datetime,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """A new catalog document; what AWS would not give keeps its old value, with a warning."""
    data = json.loads(json.dumps(catalog.data))
    types = list(catalog.types)
    by_type = {t["instance_type"]: t for t in data["instance_types"]}
    pricing = aws_for(PRICING_REGION).client("pricing")
    for region in regions:
        updated_on_demand = 0
        try:
            for kind in types:
                price = on_demand_price(pricing, kind, region)
                if price is not None:
                    by_type[kind]["on_demand_usd_per_hour"][region] = price
                    updated_on_demand += 1
        except (ClientError, BotoCoreError) as error:
            say(f"warning: {explain(error, f'Pricing API for {region}')}; on-demand prices kept")
        try:
            spot = spot_medians(aws_for(region).client("ec2"), types, now)
        except (ClientError, BotoCoreError) as error:
            say(f"warning: {explain(error, f'spot history for {region}')}; spot prices kept")
            spot = {}
        for kind, median in spot.items():
            if kind in by_type:
                by_type[kind]["spot_usd_per_hour"][region] = median
        say(f"{region}: {updated_on_demand} on-demand prices, {len(spot)} spot medians")
    data["as_of"] = now.date().isoformat()
    return data
