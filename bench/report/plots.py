"""The report's figures as PNG bytes: Figures 3.7/3.8, bars across machines, telemetry."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display: set before pyplot is imported
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bench.report.model import Group

PHASE_COLOURS = {
    "startup": "#eeeeee",
    "backend_start": "#e6e6e6",
    "data_load": "#dde8f5",
    "build": "#f5eedd",
    "fit_setup": "#f5e6dd",
    "first_epoch": "#f5dde0",
    "steady_epochs": "#e2f5dd",
    "evaluation": "#ece0f5",
}


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def learning_curves(run: Mapping[str, Any], title: str) -> bytes:
    """Training vs validation loss and accuracy per epoch; the best validation loss marked."""
    epochs = run["epochs"]
    x = [e["epoch"] for e in epochs]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    val_losses = [e.get("val_loss") for e in epochs]
    for axis, metric, label in ((loss_axis, "loss", "Loss"), (acc_axis, "accuracy", "Accuracy")):
        axis.plot(x, [e.get(metric) for e in epochs], "o-", ms=3, label=f"Training {metric}")
        axis.plot(
            x, [e.get(f"val_{metric}") for e in epochs], "s-", ms=3, label=f"Validation {metric}"
        )
        axis.set_xlabel("Epochs")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if any(v is not None for v in val_losses):
            best = min(range(len(epochs)), key=lambda i: val_losses[i] or float("inf"))
            axis.axvline(x[best], color="grey", ls="--", lw=1)
            if axis is loss_axis:
                axis.annotate(
                    f"lowest val loss: epoch {x[best]}\n(overfitting starts)",
                    (x[best], val_losses[best] or 0),
                    textcoords="offset points",
                    # Text left of the line when the minimum sits in the right half.
                    xytext=(-115, 20) if best > len(epochs) / 2 else (8, 20),
                    fontsize=8,
                )
        axis.legend(fontsize=8)
    loss_axis.set_title("Training and validation loss", fontsize=10)
    acc_axis.set_title("Training and validation accuracy", fontsize=10)
    figure.suptitle(title, fontsize=10)
    return png(figure)


def bars(groups: list[Group], figure_name: str, label: str, title: str) -> bytes:
    """One bar per machine/backend (and settings, where they differ), sorted, error bars from
    repeats (min to max)."""
    rows = []
    several_setups = len({group.setup for group in groups}) > 1
    for group in groups:
        spread = group.summary().get(figure_name) or {}
        if spread.get("median") is not None:
            name = f"{group.machine}\n{group.backend}"
            rows.append((name + (f", {group.setup.label()}" if several_setups else ""), spread))
    rows.sort(key=lambda row: row[1]["median"])
    figure, axis = plt.subplots(figsize=(8, 0.5 + 0.55 * max(len(rows), 1)))
    medians = [s["median"] for _, s in rows]
    errors = [[s["median"] - s["min"] for _, s in rows], [s["max"] - s["median"] for _, s in rows]]
    axis.barh([name for name, _ in rows], medians, xerr=errors, color="#4c72b0", capsize=3)
    for index, (value, (_, spread)) in enumerate(zip(medians, rows, strict=True)):
        axis.annotate(
            f"{value:,.4g}",
            (spread["max"], index),
            textcoords="offset points",
            xytext=(6, -3),
            fontsize=8,
        )
    axis.set_xlim(0, max((s["max"] for _, s in rows), default=1) * 1.25)
    axis.set_xlabel(label)
    axis.set_title(title, fontsize=10)
    axis.grid(axis="x", alpha=0.3)
    return png(figure)


def telemetry_timeline(run: Mapping[str, Any], title: str) -> bytes | None:
    """Utilisation, power and memory of GPU 0 over the run, phases shaded."""
    samples = [s for s in (run.get("telemetry") or {}).get("samples", []) if s["gpu"] == 0]
    if len(samples) < 2:
        return None
    figure, axes = plt.subplots(3, 1, figsize=(9, 5.5), sharex=True)
    t = [s["t"] for s in samples]
    series = (("gpu_util", "GPU util %"), ("power_w", "Power W"), ("mem_used_mib", "Memory MiB"))
    for axis, (key, label) in zip(axes, series, strict=True):
        axis.plot(t, [s[key] for s in samples], lw=1.2)
        axis.set_ylabel(label, fontsize=8)
        axis.grid(alpha=0.3)
        start, labelled = 0, [(-1e9, 0)]  # (x, level) of the phase labels so far
        for index in range(1, len(samples) + 1):
            if index == len(samples) or samples[index]["phase"] != samples[start]["phase"]:
                phase = samples[start]["phase"]
                axis.axvspan(
                    t[start],
                    t[min(index, len(t) - 1)],
                    color=PHASE_COLOURS.get(phase, "#f0f0f0"),
                    lw=0,
                )
                if axis is axes[0]:
                    # Short phases would print their names over each other: stack them.
                    last_x, last_level = labelled[-1]
                    close = t[start] - last_x < 0.12 * (t[-1] - t[0])
                    level = (last_level + 1) % 3 if close else 0
                    labelled.append((t[start], level))
                    axis.annotate(
                        phase,
                        (t[start], 1.02 + 0.13 * level),
                        xycoords=("data", "axes fraction"),
                        fontsize=7,
                    )
                start = index
    axes[-1].set_xlabel("seconds since the run started")
    figure.subplots_adjust(top=0.84)  # room for stacked phase labels under the title
    figure.suptitle(title, fontsize=10, y=0.99)
    return png(figure)
