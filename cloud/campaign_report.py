"""A campaign's report: campaign.json, `dlbench report` of its results, and the closing lines.

The ranking printed at the end is built from the result files, as the report builds it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.facts.catalog import Catalog
from cloud import guard
from cloud.campaign_options import Options
from cloud.campaign_state import Host

SUMMARY_FILE = "campaign.json"


def summary(
    options: Options, hosts: dict[str, Host], catalog: Catalog, region: str, now: datetime
) -> dict[str, Any]:
    """campaign.json's document: each type's row, the campaign's hours and cost, its cap."""
    rows: list[dict[str, Any]] = []
    for kind in options.types:
        host = hosts[kind]
        if not host.gpu:
            spec = catalog.get(kind)
            host.gpu = f"{spec.gpu_count}x {spec.gpu}"
        if host.usd_per_hour is None:
            host.usd_per_hour = catalog.price(kind, region, options.machine.spot).usd_per_hour
        hours = host.hours(now)
        result = options.folder / "results" / f"{host.host}.json"
        rows.append(
            {
                "instance_type": kind,
                "host": host.host,
                "gpu": host.gpu,
                "usd_per_hour": host.usd_per_hour,
                "status": host.status,
                "reason": host.reason,
                "verdict": host.verdict,
                "result": result.name if result.is_file() else None,
                "instance_hours": hours,
                "cost_usd": None if host.usd_per_hour is None else hours * host.usd_per_hour,
            }
        )
    ttl_h = guard.parse_ttl(options.machine.ttl_text).total_seconds() / 3600
    # Each type's instance and its root disk, as the plan's "most possible cost" counts.
    disk = catalog.disk_per_hour(options.machine.volume_gb, region)
    hourly: list[float | None] = [r["usd_per_hour"] for r in rows]
    prices = [None if p is None or disk is None else p + disk for p in hourly]
    return {
        "name": options.name,
        "region": region,
        "market": "spot" if options.machine.spot else "on-demand",
        "ttl": options.machine.ttl_text,
        "max_cost_usd": None if None in prices else sum(p or 0 for p in prices) * ttl_h,
        "instance_hours": sum(r["instance_hours"] for r in rows),
        "cost_usd": sum(r["cost_usd"] or 0 for r in rows),
        "types": rows,
    }


def report(
    document: dict[str, Any],
    folder: Path,
    bills: list[str],
    *,
    run: Callable[..., int],
    say: Callable[[str], None],
) -> None:
    """campaign.json, then `dlbench report` of every result with the ranking on top."""
    path = folder / SUMMARY_FILE
    path.write_text(json.dumps(document, indent=1) + "\n")
    results_dir = folder / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out = folder / "report"
    argv = [
        sys.executable,
        "-m",
        "bench",
        "report",
        str(results_dir),
        "--out",
        str(out),
        "--title",
        f"dlcloud bench: {document['name']}",
        "--campaign",
        str(path),
    ]
    code = run(argv, env=dict(os.environ), cwd=Path.cwd(), log=folder / "report.log")
    for row in document["types"]:
        outcome = row["status"] if row["reason"] is None else f"{row['status']}: {row['reason']}"
        say(f"  {row['instance_type']:<14} verify {row['verdict'] or '-':<4}  {outcome}")
    say(
        f"campaign cost: {document['instance_hours']:.3f} instance-hours, "
        f"{money(document['cost_usd'], 2)} at the planned prices"
    )
    if bills:
        say("\n".join(f"  cost: {bill}" for bill in bills))
    if code == 0 and (out / "report.md").is_file():
        say(terminal_ranking(results_dir, path, out / "img"))
        say(f"report: {out / 'report.html'} (also report.md)")
    else:
        say(f"the report failed (exit {code}); see {folder / 'report.log'}")


def terminal_ranking(results_dir: Path, campaign_file: Path, image_dir: Path) -> str:
    """The ranking as the report shows it, built from the result files, not cut from markdown."""
    from bench.report import model, ranking, render  # the report's heavy imports: only now

    collection = model.collect([results_dir])
    blocks = ranking.blocks(ranking.load(campaign_file), collection)
    return render.to_markdown(blocks, image_dir).strip()


def money(value: float | None, digits: int) -> str:
    return "unknown" if value is None else f"${value:.{digits}f}"
