"""dlbench report and compare on recorded results; the HTML opened in headless Chromium."""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from bench.results import document as results
from tests.conftest import REPO, dlbench

RECORDED = REPO / "tests" / "data" / "results"
REFERENCE = REPO / "bench" / "reference"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inputs = tmp_path_factory.mktemp("inputs")
    for path in RECORDED.glob("*.json"):
        shutil.copy(path, inputs)
    (inputs / "notes.json").write_text(json.dumps({"hello": "world"}))
    (inputs / "old.json").write_text(json.dumps({"tool": "dlbench", "schema_version": 0}))
    out = tmp_path_factory.mktemp("report")
    done = dlbench("report", str(inputs), "--out", str(out), "--title", "fleet")
    assert done.returncode == 0, done.stderr
    assert (
        "not a dlbench result" in done.stderr and "schema_version 0 is not readable" in done.stderr
    )
    return out


def recorded(name: str) -> results.Document:
    return results.load(RECORDED / f"{name}.json")


def test_markdown_has_the_sections_and_the_numbers(report: Path) -> None:
    text = (report / "report.md").read_text()
    for heading in (
        "# fleet",
        "## Summary",
        "## Across machines",
        "## Learning curves",
        "## GPU telemetry",
        "## Machines",
        "## Files not included",
    ):
        assert heading in text
    gpu = recorded("fixture-gpu-a")["summary"]["reuters"]
    median = gpu["steady_samples_per_s"]
    assert f"{median['median']:.0f} [{median['min']:.0f}-{median['max']:.0f}]" in text
    assert "fixture-a · NVIDIA A10G (fake NVML) · m-" in text
    assert "repeat 0: incomplete" in text, "the interrupted run is listed, not averaged"
    assert "fixture-b · CPU · m-" in text and ": fixture: no NVIDIA GPU on this host" in text
    images = [line for line in text.splitlines() if line.startswith("![")]
    assert len(images) >= 5
    for line in images:
        target = report / line.split("(")[-1].rstrip(")")
        assert target.stat().st_size > 1000


def test_csv_round_trips(report: Path) -> None:
    with (report / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    documents = [results.load(p) for p in sorted(RECORDED.glob("*.json"))]
    assert len(rows) == sum(len(d["runs"]) for d in documents)
    by_key = {(r["file"], r["repeat"]): r for r in rows}
    for path, document in zip(sorted(RECORDED.glob("*.json")), documents, strict=True):
        for run in document["runs"]:
            row = by_key[(path.name, str(run["repeat"]))]
            assert row["status"] == run["status"]
            assert row["workload"] == run["workload"]
            assert int(row["epochs"]) == len(run["epochs"])
            expected = run["throughput"].get("steady_samples_per_s")
            assert (
                float(row["steady_samples_per_s"]) if row["steady_samples_per_s"] else None
            ) == expected
            test = run.get("test") or {}
            assert (float(row["test_accuracy"]) if row["test_accuracy"] else None) == test.get(
                "accuracy"
            )


def render_in_chromium(html_path: Path) -> tuple[list[str], list[list], bytes]:
    """Console errors, every image's (complete, width, height), and a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is needed (.ci/run installs it)"
    html = html_path.read_text()
    assert "http://" not in html and "https://" not in html, "self-contained: no network"
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(html_path.as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate(
            "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        shot = page.screenshot(full_page=True)
        browser.close()
    return errors, images, shot


def assert_rendered(html_path: Path, min_images: int) -> None:
    from PIL import Image

    errors, images, shot = render_in_chromium(html_path)
    assert errors == []
    assert len(images) >= min_images
    assert all(complete and width > 0 and height > 0 for complete, width, height in images)
    picture = Image.open(io.BytesIO(shot)).convert("L")
    assert picture.height > 2000
    assert len(picture.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50, "not blank"


@pytest.mark.chromium
def test_html_renders_in_chromium(report: Path) -> None:
    assert_rendered(report / "report.html", min_images=5)


@pytest.mark.chromium
def test_report_of_the_committed_gpu_reference_results(tmp_path: Path) -> None:
    """The H100 reference runs (both modes) beside this repository's CPU fixture."""
    references = sorted(REFERENCE.glob("*.json"))
    assert len(references) >= 4, "bench/reference/ holds the committed GPU results"
    out = tmp_path / "report"
    done = dlbench(
        "report", *map(str, references), str(RECORDED / "fixture-cpu-b.json"), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    text = (out / "report.md").read_text()
    assert "NVIDIA H100 80GB HBM3" in text
    assert "## GPU telemetry" in text and "## Across machines" in text
    for path in references:
        run = results.load(path)["runs"][0]
        mode = results.load(path)["settings"]["mode"]
        figure = run["throughput"]["steady_samples_per_s"]
        assert f"{figure:.0f}" in text.replace(",", ""), (path.name, mode)
    assert_rendered(out / "report.html", min_images=8)


def scaled(document: results.Document, factor: float) -> results.Document:
    """The same results with every epoch `factor` times slower: known ratios."""
    slower = copy.deepcopy(document)
    for run in slower["runs"]:
        for epoch in run["epochs"]:
            for key in ("wall_s", "train_s", "val_s"):
                epoch[key] *= factor
        results.derive_figures(run)
    slower["summary"] = results.summarize(slower["runs"])
    return slower


def test_compare_prints_known_ratios(tmp_path: Path) -> None:
    base = recorded("fixture-cpu-b")
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(scaled(base, 2.0)))
    done = dlbench("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert done.returncode == 0, done.stderr
    lines = {line.split("  ")[1].strip(): line for line in done.stdout.splitlines()[2:]}
    assert " 0.500 " in lines["train samples/s"] and "beyond noise" in lines["train samples/s"]
    assert " 2.000 " in lines["epoch s (train + validation)"]
    assert " 1.000 " in lines["test accuracy"] and "within noise" in lines["test accuracy"]


def test_compare_refuses_to_mix_modes(tmp_path: Path) -> None:
    base = recorded("fixture-cpu-b")
    other = copy.deepcopy(base)
    other["settings"]["mode"] = "compiled"
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(other))
    done = dlbench("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert done.returncode == 2
    assert "compare results of the same mode" in done.stderr


def test_report_of_nothing_readable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[]")
    done = dlbench("report", str(tmp_path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "nothing to report" in done.stderr


def with_setup(document: results.Document, epochs: int, synthetic: bool) -> results.Document:
    """The recorded Reuters runs re-labelled as `epochs`-epoch runs on real or synthetic data."""
    changed = copy.deepcopy(document)
    changed["settings"]["synthetic"] = synthetic
    if synthetic:
        changed["settings"]["data_dir"] = None
    for run in changed["runs"]:
        run["definition"]["epochs"] = epochs
        run["epochs"] = run["epochs"][:epochs]
        if synthetic:
            sizes = ("train_samples", "val_samples", "test_samples", "input_shape")
            recorded_data = document["runs"][0]["data"]
            assert recorded_data is not None
            run["data"] = {
                "source": "synthetic",
                "seed": 0,
                "cache_hit": False,
                "load_s": 0.1,
                **{key: recorded_data[key] for key in sizes},
            }
            run["test"] = None
        results.derive_figures(run)
    changed["summary"] = results.summarize(changed["runs"])
    return changed


def test_report_keeps_runs_of_different_settings_apart(tmp_path: Path) -> None:
    """Two synthetic Reuters runs (2 and 3 epochs) and a real-data one: three rows, none merged."""
    from bench.report import model, render

    base = recorded("fixture-cpu-b")
    for name, epochs, synthetic in (("s2", 2, True), ("s3", 3, True), ("r2", 2, False)):
        (tmp_path / f"{name}.json").write_text(json.dumps(with_setup(base, epochs, synthetic)))
    found = model.groups(model.collect([tmp_path]))
    setups = sorted((g.setup.epochs, g.setup.data, len(g.runs)) for g in found)
    base_data = base["runs"][0]["data"]
    assert base_data is not None
    sha = base_data["sha256"][:8]
    assert setups == [(2, f"reuters.npz {sha}", 2), (2, "synthetic", 2), (3, "synthetic", 2)]
    rows = {(row[3], row[4]): row for row in render.summary_rows(found)}
    # The same software and model in all three: the framework's versions and the model's digest.
    same = f"{found[0].setup.software}, model {found[0].setup.model_id}, seeds 0, 1"
    assert "tensorflow-cpu 2.21.0" in same
    assert set(rows) == {
        ("reuters", f"2 epochs, batch 512, reuters.npz {sha}, target 0.8, {same}"),
        ("reuters (synthetic)", f"2 epochs, batch 512, synthetic, target 0.8, {same}"),
        ("reuters (synthetic)", f"3 epochs, batch 512, synthetic, target 0.8, {same}"),
    }
    real = rows[("reuters", f"2 epochs, batch 512, reuters.npz {sha}, target 0.8, {same}")]
    assert real[5] == "2/2" and real[10] != "n/a", "the real runs keep their test accuracy"


def test_report_pools_seeds_and_separates_batch_sizes(tmp_path: Path) -> None:
    """Runs of other seeds are the spread of one setting; another batch size is another row."""
    from bench.report import model

    base = recorded("fixture-cpu-b")
    other_seed = copy.deepcopy(base)
    other_seed["settings"]["seed"] = 7
    for run in other_seed["runs"]:
        run["definition"]["seed"] += 7
    other_batch = copy.deepcopy(base)
    for run in other_batch["runs"]:
        run["definition"]["batch_size"] = 128
    for name, document in (("a", base), ("b", other_seed), ("c", other_batch)):
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
    found = model.groups(model.collect([tmp_path]))
    assert sorted((g.setup.batch_size, len(g.runs), model.seeds_of(g.runs)) for g in found) == [
        (128, 2, "0, 1"),
        (512, 4, "0, 1, 7, 8"),
    ]


def test_compare_names_differing_settings_on_every_row(tmp_path: Path) -> None:
    base = recorded("fixture-cpu-b")
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(with_setup(base, 2, synthetic=False)))
    done = dlbench("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[2:]
    assert rows and all("differ: epochs 4 vs 2" in row for row in rows)


def test_compare_refuses_a_side_that_mixes_settings(tmp_path: Path) -> None:
    base = recorded("fixture-cpu-b")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "s2.json").write_text(json.dumps(with_setup(base, 2, synthetic=True)))
    (tmp_path / "a" / "r2.json").write_text(json.dumps(with_setup(base, 2, synthetic=False)))
    (tmp_path / "b.json").write_text(json.dumps(base))
    done = dlbench("compare", str(tmp_path / "a"), str(tmp_path / "b.json"))
    assert done.returncode == 2
    assert "mixes machines, backends or settings for reuters" in done.stderr
    assert "synthetic" in done.stderr
