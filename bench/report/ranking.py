"""A campaign's ranking of instance types: $ per run, $ to target, samples/s per $/h, cost.

`dlcloud bench` writes campaign.json beside its results; `dlbench report --campaign` reads it
and puts one ranking table per workload above the usual report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from bench.report import render
from bench.report.model import Collection


class RankedType(TypedDict):
    """One instance type of a campaign: its price, how it went, and its result file."""

    instance_type: str
    host: str
    gpu: str
    usd_per_hour: float | None
    status: str
    reason: str | None
    verdict: str | None
    result: str | None
    instance_hours: float
    cost_usd: float | None


class CampaignSummary(TypedDict):
    """What campaign.json holds."""

    name: str
    region: str
    market: str
    ttl: str
    max_cost_usd: float | None
    instance_hours: float
    cost_usd: float | None
    types: list[RankedType]


RANKING_HEADER = [
    "rank",
    "instance type",
    "GPU",
    "ran on",
    "$/h",
    "verify",
    "samples/s",
    "samples/s per $/h",
    "$/run",
    "$ to target",
    "status",
]


def load(path: Path) -> CampaignSummary:
    summary: CampaignSummary = json.loads(path.read_text())
    return summary


def money(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"${value:.{digits}f}"


def median(figures: dict[str, Any], name: str) -> float | None:
    value = (figures.get(name) or {}).get("median")
    return float(value) if isinstance(value, int | float) else None


def ran_on(document: Mapping[str, Any] | None) -> str:
    """The device the result was measured on: a type whose GPU went unused shows it here."""
    if document is None:
        return "-"
    gpus = document.get("gpus") or []
    return str(gpus[0]["name"]) if gpus else "CPU"


def workload_rows(
    campaign: CampaignSummary, documents: Mapping[str, Mapping[str, Any]], workload: str
) -> list[list[str]]:
    """Types with a result for this workload, cheapest run first; the others last, with why."""
    ranked: list[tuple[float, list[str]]] = []
    unranked: list[list[str]] = []
    for row in campaign["types"]:
        document = documents.get(row["result"] or "")
        figures = (document or {}).get("summary", {}).get(workload) if document else None
        hourly = row["usd_per_hour"]
        common = [row["instance_type"], row["gpu"], ran_on(document), money(hourly, 3)]
        common.append(row["verdict"] or "not run")
        if not figures:
            why = row["status"] if document is None else "no result for this workload"
            if row["reason"]:
                why = f"{row['status']}: {row['reason']}"
            unranked.append(["-", *common, "-", "-", "-", "-", why])
            continue
        synthetic = any(
            (r.get("data") or {}).get("source") == "synthetic"
            for r in document["runs"]  # type: ignore[index]
            if r["workload"] == workload
        )
        rate = median(figures, "steady_samples_per_s")
        run_usd = median(figures, "run_usd")
        target_usd = median(figures, "to_target_usd")
        per_dollar = None if rate is None or not hourly else rate / hourly
        ranked.append(
            (
                float("inf") if run_usd is None else run_usd,
                [
                    *common,
                    "-" if rate is None else f"{rate:,.0f}",
                    "-" if per_dollar is None else f"{per_dollar:,.0f}",
                    money(run_usd),
                    "n/a (synthetic)" if synthetic else money(target_usd),
                    row["status"] if row["reason"] is None else f"{row['status']}: {row['reason']}",
                ],
            )
        )
    ranked.sort(key=lambda item: item[0])
    return [[str(i), *cells] for i, (_, cells) in enumerate(ranked, 1)] + unranked


def blocks(campaign: CampaignSummary, collection: Collection) -> list[render.Block]:
    documents = {loaded.path.name: loaded.document for loaded in collection.results}
    workloads = list(
        dict.fromkeys(name for document in documents.values() for name in document["summary"])
    )
    out = [
        render.Block("h2", f"Ranking: campaign {campaign['name']}"),
        render.Block(
            "p",
            f"{len(campaign['types'])} instance type(s) in {campaign['region']}, "
            f"{campaign['market']}, cheapest run first. $/run and $ to target are the run's "
            "time at the campaign's price per hour; samples/s per $/h is the steady rate "
            "divided by that price.",
        ),
    ]
    for workload in workloads or ["(no results)"]:
        out.append(render.Block("h3", workload))
        out.append(
            render.Block(
                "table", header=RANKING_HEADER, rows=workload_rows(campaign, documents, workload)
            )
        )
    cost = campaign["cost_usd"]
    out.append(
        render.Block(
            "p",
            f"Campaign cost: {campaign['instance_hours']:.3f} instance-hours, "
            f"{money(cost, 2)} at the planned prices (at most {money(campaign['max_cost_usd'], 2)} "
            f"had every instance lived its TTL of {campaign['ttl']}).",
        )
    )
    return out


def write(collection: Collection, campaign_file: Path, out: Path, title: str) -> dict[str, Path]:
    """The usual report with the campaign's ranking right under the title."""
    report = render.build(collection, title)
    report[2:2] = blocks(load(campaign_file), collection)
    return render.write_files(
        out,
        {
            "markdown": lambda folder: render.to_markdown(report, folder / render.IMAGE_DIR),
            "html": lambda folder: render.to_html(report),
            "csv": lambda folder: render.to_csv(collection),
        },
    )
