"""report.md, a self-contained report.html and results.csv from one list of blocks."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.report import plots
from bench.report.model import Collection, Group, groups, setup_of
from bench.results import document as results
from bench.textfmt import format_spread

CSV_FIELDS = [
    "file",
    "machine",
    "backend",
    "mode",
    "workload",
    "repeat",
    "status",
    "data",
    "device",
    "epochs",
    "batch_size",
    "settings",
    "first_epoch_s",
    "steady_epoch_s",
    "steady_samples_per_s",
    "end_to_end_s",
    "test_loss",
    "test_accuracy",
    "target_accuracy",
    "target_epoch",
    "time_to_target_s",
    "run_usd",
    "to_target_usd",
    "energy_j",
    "steady_gpu_util",
]


@dataclass
class Block:
    """kind: h1, h2, h3, p, table, img, list."""

    kind: str
    text: str = ""
    header: list[str] | None = None
    rows: list[list[str]] | None = None
    image: bytes | None = None
    items: list[str] | None = None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80]


def summary_rows(found: list[Group]) -> list[list[str]]:
    rows = []
    for group in found:
        figures = group.summary()

        def cell(name: str, digits: int, figures: dict[str, Any] = figures) -> str:
            return format_spread(figures.get(name) or {}, digits)

        synthetic = group.synthetic
        rows.append(
            [
                group.machine,
                group.backend,
                group.mode,
                group.workload + (" (synthetic)" if synthetic else ""),
                group.settings_label(),
                f"{len(group.complete)}/{len(group.runs)}",
                cell("steady_samples_per_s", 0),
                cell("steady_epoch_s", 3),
                cell("first_epoch_s", 2),
                cell("end_to_end_s", 1),
                "n/a" if synthetic else cell("test_accuracy", 3),
                "n/a" if synthetic else cell("time_to_target_s", 2),
                "n/a" if synthetic else cell("to_target_usd", 4),
                cell("run_usd", 4),
                cell("energy_j", 0),
                cell("steady_gpu_util", 0),
            ]
        )
    return rows


SUMMARY_HEADER = [
    "machine",
    "backend",
    "mode",
    "workload",
    "settings",
    "runs",
    "train samples/s",
    "epoch s (train + validation)",
    "first epoch s (train + validation)",
    "end-to-end s per run",
    "test acc",
    "to target s",
    "$ to target",
    "$/run",
    "energy J",
    "GPU util %",
]


def build(collection: Collection, title: str = "dlbench report") -> list[Block]:
    found = groups(collection)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blocks = [
        Block("h1", title),
        Block(
            "p",
            f"{len(collection.results)} result file(s), {len(found)} machine x backend x "
            f"mode x workload x settings group(s); written {stamp}. Figures are medians over "
            "complete runs with [min-max] when there were repeats; a machine is its hardware "
            "(CPU model, cores, memory, GPU models and count: the id after its name), modes "
            "are never mixed, and runs that differ in epochs, batch size, data, target, "
            "opt-in changes, precision, GPU memory policy, model definition or framework versions "
            "are separate rows; runs of other "
            "seeds are pooled as the spread. Train samples/s counts training only; epoch "
            "seconds include validation; end-to-end is per run, from its worker's spawn to its "
            "exit. GPU util is GPU 0's mean over the steady epochs, '-' where they took under "
            "two sampling intervals.",
        ),
        Block("h2", "Summary"),
        Block("table", header=SUMMARY_HEADER, rows=summary_rows(found)),
    ]
    incomplete = [(g, r) for g in found for r in g.runs if r["status"] != "complete"]
    if incomplete:
        blocks.append(
            Block(
                "list",
                "Runs not in the figures",
                items=[
                    f"{g.machine} {g.backend} {g.mode} {g.workload} ({g.settings_label()}) "
                    f"repeat {r['repeat']}: {r['status']}"
                    + (f" ({r['error']['message']})" if r["error"] else "")
                    for g, r in incomplete
                ],
            )
        )
    blocks += comparison_blocks(found)
    blocks += curve_blocks(found)
    blocks += telemetry_blocks(found)
    blocks += machine_blocks(collection)
    blocks += verify_blocks(collection)
    if collection.refused:
        blocks.append(Block("h2", "Files not included"))
        blocks.append(Block("list", items=[why for _, why in collection.refused]))
    return blocks


def comparison_blocks(found: list[Group]) -> list[Block]:
    blocks = [Block("h2", "Across machines")]
    by_chart: dict[tuple[str, str], list[Group]] = {}
    for group in found:
        by_chart.setdefault((group.workload, group.mode), []).append(group)
    for (workload, mode), members in by_chart.items():
        blocks.append(
            Block(
                "img",
                f"{workload} ({mode}): training samples per second",
                image=plots.bars(
                    members,
                    "steady_samples_per_s",
                    "train samples/s",
                    f"{workload}, mode {mode}: steady training samples/s (higher is better)",
                ),
            )
        )
        if any((g.summary().get("run_usd") or {}).get("n") for g in members):
            blocks.append(
                Block(
                    "img",
                    f"{workload} ({mode}): $ per run",
                    image=plots.bars(
                        members,
                        "run_usd",
                        "$ per run",
                        f"{workload}, mode {mode}: $ per run (lower is better)",
                    ),
                )
            )
    return blocks


def curve_blocks(found: list[Group]) -> list[Block]:
    blocks = [Block("h2", "Learning curves (the text's Figures 3.7 and 3.8)")]
    for group in found:
        runs = [r for r in group.runs if r["epochs"] and r["status"] == "complete"]
        if not runs or group.synthetic:
            continue
        run = runs[0]
        title = (
            f"{group.workload} on {group.machine}, {group.backend}, {group.mode}, "
            f"{group.setup.epochs} epochs"
        )
        blocks.append(Block("img", title, image=plots.learning_curves(run, title)))
    if len(blocks) == 1:
        blocks.append(Block("p", "No complete run on real data."))
    return blocks


def telemetry_blocks(found: list[Group]) -> list[Block]:
    blocks = [Block("h2", "GPU telemetry")]
    reasons = set()
    for group in found:
        for run in group.runs[:1]:
            telemetry = run.get("telemetry") or {}
            if not telemetry.get("available"):
                reasons.add(f"{group.machine}: {telemetry.get('reason', 'no telemetry recorded')}")
                continue
            title = (
                f"{group.workload} on {group.machine}, {group.backend}, {group.mode}, "
                f"{group.setup.label()}"
            )
            image = plots.telemetry_timeline(run, title)
            if image is not None:
                blocks.append(Block("img", f"Telemetry: {title}", image=image))
    if reasons:
        blocks.append(Block("list", "Without telemetry", items=sorted(reasons)))
    return blocks


def machine_blocks(collection: Collection) -> list[Block]:
    rows = []
    seen = set()
    for loaded in collection.results:
        document = loaded.document
        gpu: dict[str, Any] = (document.get("gpus") or [{}])[0]
        backend: dict[str, Any] = next(
            (found for found in (r["backend"] for r in document["runs"]) if found), {}
        )
        pricing = document.get("pricing")
        price = (
            f"${pricing['usd_per_hour']}/h, {pricing['source']}, {pricing['as_of'] or '-'}"
            if isinstance(pricing, dict) and pricing.get("usd_per_hour") is not None
            else (pricing if isinstance(pricing, str) else "-")
        )
        row = [
            loaded.machine,
            gpu.get("name") or "-",
            f"{gpu['driver_version']} / {gpu['cuda_driver_version']}" if gpu else "-",
            gpu.get("compute_capability") or "-",
            f"gen {gpu['pcie_generation']} x{gpu['pcie_width']}" if gpu.get("pcie_width") else "-",
            f"{backend.get('name', '-')} {backend.get('version', '')}, keras "
            f"{backend.get('keras_version', '-')}",
            document["host"]["cpu_model"],
            document["host"]["os"],
            price,
        ]
        if tuple(row) not in seen:
            seen.add(tuple(row))
            rows.append(row)
    header = [
        "machine",
        "GPU",
        "driver / CUDA",
        "CC",
        "PCIe",
        "backend",
        "CPU",
        "OS",
        "price (source, date)",
    ]
    return [Block("h2", "Machines"), Block("table", header=header, rows=rows)]


def verify_blocks(collection: Collection) -> list[Block]:
    """`dlbench verify --json` files: one row per host and GPU, with what did not pass."""
    from bench.machine.verify import worst

    rows = []
    for path, document in collection.verifies:
        machine = {"key": "machine", "name": "-", "checks": document.get("machine", [])}
        machine["verdict"] = worst([c["status"] for c in machine["checks"]])
        for gpu in [machine, *document.get("gpus", [])]:
            bad = [f"{c['name']}: {c['status']}" for c in gpu.get("checks", [])]
            bad = [b for b in bad if b.endswith(("FAIL", "WARN"))]
            rows.append(
                [
                    document.get("host", path.stem),
                    gpu.get("key", "-"),
                    gpu.get("name") or "-",
                    gpu.get("verdict", "-"),
                    ", ".join(bad) or "-",
                    f"{document['verdict']} ({document['level']})",
                ]
            )
    if not rows:
        return []
    header = ["host", "GPU", "model", "verdict", "not passed", "machine verdict (level)"]
    return [Block("h2", "Verify results, per GPU"), Block("table", header=header, rows=rows)]


def _md_inline(text: object) -> str:
    """Text from result files as inert Markdown: one line, no HTML."""
    one_line = " ".join(str(text).split())
    return one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(text: object) -> str:
    return _md_inline(text).replace("|", "\\|")


def _md_text(text: object) -> str:
    """_md_inline for a line of its own: a leading Markdown marker (a heading, a list) escaped."""
    escaped = _md_inline(text)
    return "\\" + escaped if escaped[:1] in ("#", "-", "+", "*", "=", "`", "~") else escaped


def to_markdown(blocks: list[Block], image_dir: Path) -> str:
    """Markdown with images written as PNG files under image_dir."""
    image_dir.mkdir(parents=True, exist_ok=True)
    out: list[str] = []
    for index, block in enumerate(blocks):
        if block.kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(block.kind[1])} {_md_text(block.text)}\n")
        elif block.kind == "p":
            out.append(_md_text(block.text) + "\n")
        elif block.kind == "table" and block.header is not None:
            out.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            out.append("|" + "---|" * len(block.header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows or []]
            out.append("")
        elif block.kind == "list":
            if block.text:
                out.append(f"{_md_text(block.text)}:\n")
            out += [f"- {_md_text(item)}" for item in block.items or []]
            out.append("")
        elif block.kind == "img" and block.image is not None:
            name = f"{index:02d}-{slug(block.text)}.png"
            (image_dir / name).write_bytes(block.image)
            alt = _md_text(block.text).replace("[", "(").replace("]", ")")
            out.append(f"![{alt}]({image_dir.name}/{name})\n")
    return "\n".join(out)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f3f5f8; } tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; display: block; margin: 0.5rem 0 1.5rem; }
figcaption { font-size: 0.85rem; color: #555; }
"""


def to_html(blocks: list[Block]) -> str:
    """One file, images inline as data URIs: opens anywhere without a network."""
    esc = html.escape
    title = next((b.text for b in blocks if b.kind == "h1"), "dlbench report")
    out = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}'
        f"</title><style>{STYLE}</style></head><body>"
    ]
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            out.append(f"<{block.kind}>{esc(block.text)}</{block.kind}>")
        elif block.kind == "p":
            out.append(f"<p>{esc(block.text)}</p>")
        elif block.kind == "table" and block.header is not None:
            head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>"
                for row in block.rows or []
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif block.kind == "list":
            if block.text:
                out.append(f"<p>{esc(block.text)}:</p>")
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items or []) + "</ul>")
        elif block.kind == "img" and block.image is not None:
            data = base64.b64encode(block.image).decode()
            out.append(
                f'<figure><img alt="{esc(block.text)}" src="data:image/png;base64,'
                f'{data}"><figcaption>{esc(block.text)}</figcaption></figure>'
            )
    out.append("</body></html>")
    return "\n".join(out)


def csv_rows(collection: Collection) -> list[dict[str, Any]]:
    rows = []
    for loaded in collection.results:
        settings = loaded.document["settings"]
        for run in loaded.document["runs"]:
            timing, test = run["timing"], run.get("test") or {}
            target, cost = run.get("target") or {}, run.get("cost") or {}
            gpu = results.telemetry_figures(run)
            rows.append(
                {
                    "file": loaded.path.name,
                    "machine": loaded.machine,
                    "backend": settings["backend"],
                    "mode": settings["mode"],
                    "workload": run["workload"],
                    "repeat": run["repeat"],
                    "status": run["status"],
                    "data": (run.get("data") or {}).get("source"),
                    "device": (run.get("backend") or {}).get("device_name"),
                    "epochs": len(run["epochs"]),
                    "batch_size": run["definition"]["batch_size"],
                    "settings": setup_of(
                        run, settings, loaded.document["host"].get("packages")
                    ).label(),
                    "first_epoch_s": timing.get("first_epoch_s"),
                    "steady_epoch_s": timing.get("steady_epoch_s"),
                    "steady_samples_per_s": (run.get("throughput") or {}).get(
                        "steady_samples_per_s"
                    ),
                    "end_to_end_s": timing.get("end_to_end_s"),
                    "test_loss": test.get("loss"),
                    "test_accuracy": test.get("accuracy"),
                    "target_accuracy": run["definition"]["target_accuracy"],
                    "target_epoch": target.get("reached_epoch"),
                    "time_to_target_s": target.get("reached_s"),
                    "run_usd": cost.get("run_usd"),
                    "to_target_usd": cost.get("to_target_usd"),
                    "energy_j": gpu["energy_j"],
                    "steady_gpu_util": gpu["steady_gpu_util"],
                }
            )
    return rows


def write(collection: Collection, out: Path, title: str = "dlbench report") -> dict[str, Path]:
    """Write report.md (+ img/), report.html and results.csv into out; return their paths."""
    blocks = build(collection, title)
    return write_files(
        out,
        {
            "markdown": lambda folder: to_markdown(blocks, folder / "img"),
            "html": lambda folder: to_html(blocks),
            "csv": lambda folder: to_csv(collection),
        },
    )


FILE_NAMES = {"markdown": "report.md", "html": "report.html", "csv": "results.csv"}
IMAGE_DIR = "img"


class ReportWriteError(OSError):
    """The report could not be written; nothing of it was left in place."""


def to_csv(collection: Collection) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in csv_rows(collection):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def write_files(out: Path, makers: dict[str, Callable[[Path], str]]) -> dict[str, Path]:
    """Build the files (and img/) in a temp folder inside out, then move each into place.

    A failure (a full disk) removes the temp folder and leaves out as it was: never half a
    report. `~` in out is the user's home.
    """
    out = out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        try:
            for kind, make in makers.items():
                (staging / FILE_NAMES[kind]).write_text(make(staging))
        except OSError as error:
            raise ReportWriteError(
                error.errno, f"cannot write the report to {out}: {error.strerror or error}"
            ) from error
        if (staging / IMAGE_DIR).exists():
            old = out / IMAGE_DIR
            if old.is_dir() and not old.is_symlink():
                old.rename(staging / ".img-old")
            (staging / IMAGE_DIR).rename(old)
        # The HTML last: it is what the command names, so it appears when the rest is there.
        for kind in sorted(makers, key=lambda k: k == "html"):
            (staging / FILE_NAMES[kind]).replace(out / FILE_NAMES[kind])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {kind: out / FILE_NAMES[kind] for kind in makers}
