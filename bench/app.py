"""The one application layer under `dlbench` (bench/cli.py) and `bench.api`: prepare a run, run
it, verify the machine, report. It takes plain values and returns them; the callers print.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import exitcodes
from bench.facts.catalog import Catalog, CatalogError
from bench.machine import nvml, verify_measure
from bench.machine import verify as judging
from bench.machine.telemetry import DEFAULT_INTERVAL_S
from bench.results import output
from bench.results.cost import PriceInputs, RegionError, check_region, resolve_pricing
from bench.results.document import Document
from bench.training import backends, data
from bench.training.backends import DEFAULT_GPU_MEMORY
from bench.training.modes.options import OptionError
from bench.training.modes.options import check as check_options
from bench.training.progress import Progress
from bench.training.runner import Runner, RunPlan, new_document
from bench.training.workloads import WORKLOADS, UnknownWorkloadError, get_workload
from bench.training.workloads.spec import Workload

# numpy's and the backends' seeds are unsigned 32-bit; repeat i uses seed + i.
MAX_SEED = 2**32 - 1
# Runs started from Python have no instance type or price to ask for: nothing queries EC2.
NOT_PRICED = "runs started from Python are not priced"


class UsageError(ValueError):
    """Bad input, refused before any work: one or two lines saying what to do (CLI: exit 2)."""


@dataclass(frozen=True)
class Prices:
    """How this machine is priced: the first that applies of a price, EC2, electricity."""

    price_per_hour: float | None = None
    instance_type: str | None = None
    region: str | None = None
    ask_imds: bool = True
    electricity_price: float | None = None
    amortisation_per_hour: float | None = None


@dataclass(frozen=True)
class RunRequest:
    """What `dlbench run` (or `bench.api.run`) was asked for, as plain values."""

    workloads: tuple[str, ...] = ()
    backend: str = "tensorflow"
    mode: str = "fit"
    epochs: int | None = None
    batch_size: int | None = None
    target_accuracy: float | None = None
    seed: int = 0
    repeats: int = 1
    data_dir: str | None = None
    cache_dir: str | None = None
    synthetic: bool = False
    out: str = "results"
    output: str | None = None
    telemetry_interval_s: float = DEFAULT_INTERVAL_S
    gpu_memory: str = DEFAULT_GPU_MEMORY
    opt_in: tuple[str, ...] = ()
    prices: Prices | None = None  # None: not priced, nothing asks EC2


@dataclass(frozen=True)
class PreparedRun:
    """A run checked and ready: its plan, where its data came from, how it is priced."""

    plan: RunPlan
    data_dir: Path | None
    prices: PriceInputs | None


def price_inputs(prices: Prices) -> PriceInputs:
    """The cost options, checked against the catalog before any work starts."""
    if prices.region is not None and prices.instance_type is None:
        raise UsageError("--region prices --instance-type; pass both, or neither")
    if prices.region is not None:
        try:
            check_region(prices.region)
        except RegionError as error:
            raise UsageError(str(error)) from None
    if prices.amortisation_per_hour is not None and prices.electricity_price is None:
        raise UsageError(
            "--amortisation-per-hour is added to --electricity-price; pass both, or neither"
        )
    if prices.instance_type is not None:
        try:
            Catalog.load().get(prices.instance_type)
        except CatalogError as error:
            raise UsageError(f"--instance-type: {error}") from None
    return PriceInputs(
        price_per_hour=prices.price_per_hour,
        instance_type=prices.instance_type,
        region=prices.region,
        ask_imds=prices.ask_imds,
        electricity_price=prices.electricity_price,
        amortisation_per_hour=prices.amortisation_per_hour or 0.0,
    )


def writable_folder(folder: Path, what: str, fix: str) -> Path:
    """Create the folder and prove it writable before any work starts, or say what to do."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(
            f"cannot write {what} to {folder} ({error.strerror or error}); {fix}"
        ) from None
    return folder


def checked_cache_dir(value: str | None) -> Path:
    """The encode cache's folder, created and proven writable."""
    return writable_folder(
        data.resolve_cache_dir(value),
        "the cache",
        f"pass --cache-dir (or set ${data.CACHE_DIR_ENV}) with a writable folder",
    )


def check_run_inputs(request: RunRequest) -> None:
    """What a parser cannot see alone: combinations, and what this environment lacks."""
    if request.mode == "compiled" and request.backend not in ("jax", "tensorflow"):
        raise UsageError(
            f"--mode compiled is implemented for the jax and tensorflow backends, not "
            f"{request.backend}: use one of those, or --mode fit (the text's model.fit)"
        )
    if request.seed + request.repeats - 1 > MAX_SEED:
        raise UsageError(
            f"--seed {request.seed} with --repeats {request.repeats} runs past 2**32-1 "
            f"({MAX_SEED}); the largest seed for {request.repeats} repeats is "
            f"{MAX_SEED - request.repeats + 1}"
        )
    try:
        check_options(list(request.opt_in), request.mode, request.backend)
    except OptionError as error:
        raise UsageError(str(error)) from None
    if not backends.installed(request.backend):
        raise UsageError(
            f"the {request.backend} backend is not installed here: "
            f"pip install 'dlstation[{request.backend}]', or choose another --backend"
        )


def chosen_workloads(request: RunRequest) -> tuple[Workload, ...]:
    """The named workloads (all by default) with the request's overrides applied."""
    names = request.workloads or tuple(WORKLOADS)
    try:
        chosen = [get_workload(name) for name in dict.fromkeys(names)]
    except UnknownWorkloadError as error:
        raise UsageError(str(error)) from None
    overrides: dict[str, Any] = {
        "epochs": request.epochs,
        "batch_size": request.batch_size,
        "target_accuracy": request.target_accuracy,
    }
    given = {key: value for key, value in overrides.items() if value is not None}
    return tuple(dataclasses.replace(w, **given) for w in chosen)


def word_index_name(dataset: str) -> str:
    """The file keras.datasets.<dataset>.get_word_index() reads."""
    return f"{dataset}_word_index.json"


def keras_home(workloads: Sequence[Workload], data_dir: str | None, cache_dir: Path) -> Path | None:
    """A KERAS_HOME holding the data folder's files; None without a data folder.

    Unreadable encode caches are dropped, data files checked and linked; word indexes are
    copied, so a Keras re-download could never write over the user's.
    """
    for workload in workloads:
        data.check_encode_cache(workload, cache_dir)
    folder = data.resolve_data_dir(data_dir)
    if folder is None:
        return None
    home: Path | None = None
    try:
        for workload in workloads:
            home = data.prepare_keras_home(data.verify_data_file(workload, folder), cache_dir)
            index = folder / word_index_name(workload.dataset)
            target = home / "datasets" / index.name
            if index.is_file() and not target.is_file():
                shutil.copyfile(index, target)
    except data.DataError as error:
        raise UsageError(str(error)) from None
    return home


def output_path(request: RunRequest, now: Callable[[], datetime] | None = None) -> Path:
    """The result file (named for host, backend, mode and time), claimed before any training.

    It is created empty and exclusively, so concurrent runs never share a file.
    """
    try:
        if request.output:
            given = Path(request.output).expanduser()
            # The folder is resolved, never the name: a link at the name is refused, not followed.
            path = given.parent.resolve() / given.name
            output.refuse_existing(path, "--output")
            output.refuse_foreign(path, "--output")
        else:
            when = (now or (lambda: datetime.now(timezone.utc)))()
            name = output.default_name(socket.gethostname(), request.backend, request.mode, when)
            path = Path(request.out).expanduser().resolve() / name
        writable_folder(path.parent, "results", "pass --out with a writable folder")
        return output.claim(path, unique=not request.output)
    except output.OutputError as error:
        raise UsageError(str(error)) from None


def prepare_run(request: RunRequest) -> PreparedRun:
    """Every check a run needs, in the order that refuses bad input before any work."""
    check_run_inputs(request)
    workloads = chosen_workloads(request)
    prices = price_inputs(request.prices) if request.prices is not None else None
    cache_dir = checked_cache_dir(request.cache_dir)
    home = None if request.synthetic else keras_home(workloads, request.data_dir, cache_dir)
    plan = RunPlan(
        workloads=workloads,
        backend=request.backend,
        mode=request.mode,
        seed=request.seed,
        repeats=request.repeats,
        synthetic=request.synthetic,
        cache_dir=cache_dir,
        keras_home=home,
        output=output_path(request),
        telemetry_interval_s=request.telemetry_interval_s,
        gpu_memory=request.gpu_memory,
        options=tuple(dict.fromkeys(request.opt_in)),
    )
    return PreparedRun(plan, data.resolve_data_dir(request.data_dir), prices)


def exit_code(runner_code: int) -> int:
    """The runner's 0, 1 or 128+signal, as the exit-code table has it."""
    if runner_code == 128 + signal.SIGINT:
        return exitcodes.INTERRUPTED
    if runner_code > 128:
        return exitcodes.TERMINATED
    return exitcodes.FAILED if runner_code else exitcodes.OK


def run(
    prepared: PreparedRun, command: list[str], progress: Progress | None = None
) -> tuple[int, Document]:
    """Train the plan, each run in a fresh worker process; the exit code and the document."""
    session = nvml.open_nvml()
    try:
        pricing = resolve_pricing(prepared.prices) if prepared.prices else NOT_PRICED
        document = new_document(
            prepared.plan, session, pricing, command, data_dir=prepared.data_dir
        )
        quiet = progress or Progress(quiet=True, stream=io.StringIO())
        runner = Runner(prepared.plan, document, quiet, session, pricing)
        return exit_code(runner.execute()), document
    finally:
        if isinstance(session, nvml.NvmlSession):
            session.close()


@dataclass(frozen=True)
class Verified:
    """verify's checks, verdict and observations; text and document are its two renderings."""

    checks: list[judging.Check]
    verdict: str
    seen: judging.Observations

    @property
    def exit_code(self) -> int:
        return judging.EXIT_CODES[self.verdict]

    def text(self) -> str:
        return judging.render(self.checks, self.verdict, self.seen)

    def document(self, host: str | None = None) -> dict[str, Any]:
        return judging.as_document(
            self.checks, self.verdict, self.seen, host or socket.gethostname()
        )

    def json(self, host: str | None = None) -> str:
        return judging.as_json(self.checks, self.verdict, self.seen, host or socket.gethostname())


def verify_seams() -> verify_measure.Seams:
    """Where verify touches the world (NVML, processes, the kernel log, metadata)."""
    return verify_measure.Seams()


def verify(
    options: verify_measure.Options, say: Callable[[str], None] = lambda _text: None
) -> Verified:
    """Measure, then judge: the machine's lines and verdict."""
    seen = verify_measure.measure(options, verify_seams(), say=say)
    checks = judging.judge(seen)
    return Verified(checks, judging.verdict(checks), seen)


@dataclass(frozen=True)
class Reported:
    paths: dict[str, Path]
    skipped: list[str]


def report(
    results: Sequence[Path], out: Path, title: str, campaign: Path | None = None
) -> Reported:
    """report.md, report.html and results.csv of the given result files and folders."""
    from bench.report import model, render

    writable_folder(out.expanduser(), "the report", "pass --out with a writable folder")
    collection = model.collect(list(results))
    skipped = [why for _, why in collection.refused]
    if not collection.results and not collection.verifies and campaign is None:
        raise UsageError("no dlbench results among the given paths; nothing to report")
    if campaign is not None:
        from bench.report import ranking

        return Reported(ranking.write(collection, campaign, out, title), skipped)
    return Reported(render.write(collection, out, title), skipped)


def compare(a: Path, b: Path) -> str:
    """B's figures as ratios of A's, with their spread."""
    from bench.report import compare as comparing
    from bench.report import model

    try:
        first = comparing.side(model.collect([a]), str(a))
        second = comparing.side(model.collect([b]), str(b))
        return comparing.render(first, second)
    except comparing.CompareError as error:
        raise UsageError(str(error)) from None
