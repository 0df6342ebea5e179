"""Refresh the price catalog: the Pricing API or AWS's public price list for on-demand, spot
price history for spot."""

from __future__ import annotations

import json
import os
import statistics
import urllib.request
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


# AWS's public price list: one bulk offer file per region, no credentials needed.
OFFER_URL = (
    "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/{region}/index.json"
)
OFFER_URL_ENV = "DLSTATION_OFFER_URL"
# The offer file's attributes of the one price dlstation stores: Linux, shared tenancy, no
# preinstalled software or license, capacity "Used" (not a reservation's unused capacity).
LINUX_ON_DEMAND = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "licenseModel": "No License required",
}


def offer_url(region: str) -> str:
    """The region's offer file; $DLSTATION_OFFER_URL (with {region}) points elsewhere."""
    return os.environ.get(OFFER_URL_ENV, OFFER_URL).format(region=region)


def read_offer_file(url: str, timeout: float = 300) -> dict[str, Any]:
    """The offer file's JSON; OfferFileError says what failed and what to do."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: dict[str, Any] = json.load(response)
    except (OSError, ValueError) as error:
        raise OfferFileError(f"could not read AWS's price list at {url}: {error}") from error
    if "products" not in data or "terms" not in data:
        raise OfferFileError(f"{url} is not an AWS offer file (no products or terms)")
    return data


class OfferFileError(RuntimeError):
    """AWS's price list could not be read or is not an offer file."""


def offer_prices(offer: dict[str, Any], instance_types: set[str]) -> dict[str, float]:
    """Linux on-demand $/h per instance type, from one region's offer file."""
    found: dict[str, float] = {}
    on_demand: dict[str, Any] = offer["terms"].get("OnDemand", {})
    for sku, product in offer["products"].items():
        attributes = product.get("attributes", {})
        kind = attributes.get("instanceType")
        if kind not in instance_types:
            continue
        if any(attributes.get(key) != value for key, value in LINUX_ON_DEMAND.items()):
            continue
        for term in on_demand.get(sku, {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = float(dimension.get("pricePerUnit", {}).get("USD", 0))
                if usd > 0 and dimension.get("unit") == "Hrs":
                    found[kind] = usd
    return found


def refresh_from_offer_files(
    catalog: Catalog,
    regions: list[str],
    now: datetime,
    read: Callable[[str], dict[str, Any]] = read_offer_file,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """A new catalog document with on-demand prices from AWS's public price list."""
    data = json.loads(json.dumps(catalog.data))
    by_type = {t["instance_type"]: t for t in data["instance_types"]}
    published = []
    for region in regions:
        offer = read(offer_url(region))
        found = offer_prices(offer, set(by_type))
        for kind, usd in found.items():
            by_type[kind]["on_demand_usd_per_hour"][region] = usd
        missing = sorted(set(by_type) - set(found))
        say(
            f"{region}: {len(found)} on-demand prices"
            + (f"; not offered there: {', '.join(missing)}" if missing else "")
        )
        published.append(f"{region} {offer.get('publicationDate', 'undated')}")
    data["as_of"] = now.date().isoformat()
    data["sources"]["on_demand"] = "AWS price list (offer files), Linux: " + ", ".join(published)
    return data
