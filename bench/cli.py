"""dlbench: train the text's models and verify what a machine does with them."""

from __future__ import annotations

import argparse
import dataclasses
import math
import socket
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from bench.facts.catalog import Catalog, CatalogError
from bench.machine import nvml, verify, verify_measure
from bench.machine.telemetry import DEFAULT_INTERVAL_S
from bench.results import output
from bench.results.cost import PriceInputs, RegionError, check_region, resolve_pricing
from bench.training import backends, data
from bench.training.backends import BACKENDS, DEFAULT_GPU_MEMORY, GPU_MEMORY_POLICIES
from bench.training.modes import MODES
from bench.training.modes.options import OPTIONS, OptionError
from bench.training.modes.options import check as check_options
from bench.training.progress import Progress
from bench.training.runner import Runner, RunPlan, new_document
from bench.training.workloads import WORKLOADS, UnknownWorkloadError, get_workload
from bench.training.workloads.spec import Workload

EXIT_USAGE = 2
# numpy's and the backends' seeds are unsigned 32-bit; repeat i uses seed + i.
MAX_SEED = 2**32 - 1


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, its errors one line (what is wrong, where the valid values are), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> float:
    """A finite number, zero or more (prices, intervals)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, got {text}")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**32-1 ({MAX_SEED}), got {value}")
    return value


def accuracy(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dlbench",
        description="Train the IMDB and Reuters models of Deep Learning with Python, chapter 3, "
        "and record what this machine did with them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("list", help="the workloads and their definitions")

    run = commands.add_parser("run", help="train workloads and write a result file")
    run.add_argument(
        "workloads",
        nargs="*",
        metavar="WORKLOAD",
        help=f"workloads to run (default: all of {', '.join(WORKLOADS)})",
    )
    run.add_argument(
        "--backend",
        default="tensorflow",
        choices=BACKENDS,
        help="Keras backend (default: tensorflow)",
    )
    run.add_argument(
        "--mode",
        default="fit",
        choices=MODES,
        help="execution mode; fit is the text's code (default: fit)",
    )
    run.add_argument("--epochs", type=positive_int, help="override the text's 20 epochs")
    run.add_argument("--batch-size", type=positive_int, help="override the text's batch of 512")
    run.add_argument(
        "--seed", type=seed, default=0, help="random seed; repeat i uses seed+i (default: 0)"
    )
    run.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="runs per workload, each in a fresh process (default: 1)",
    )
    run.add_argument(
        "--target-accuracy",
        type=accuracy,
        help="validation accuracy to time (default: 0.88 IMDB, 0.80 Reuters)",
    )
    run.add_argument(
        "--data-dir",
        help=f"folder with Keras's data files (default: ${data.DATA_DIR_ENV}, "
        "else Keras's cache and download)",
    )
    run.add_argument(
        "--cache-dir",
        help=f"encoded-data cache (default: ${data.CACHE_DIR_ENV} or ~/.cache/dlstation)",
    )
    run.add_argument(
        "--synthetic",
        action="store_true",
        help="random data of the real shapes: throughput only, no accuracy",
    )
    run.add_argument(
        "--out", default="results", help="folder for the result file (default: ./results)"
    )
    run.add_argument("--output", help="exact result file path (overrides --out)")
    run.add_argument("--quiet", action="store_true", help="print only the result file's path")
    run.add_argument(
        "--telemetry-interval",
        type=non_negative,
        default=DEFAULT_INTERVAL_S,
        help="seconds between GPU samples; 0 turns telemetry off (default: 0.2)",
    )
    run.add_argument(
        "--gpu-memory",
        default=DEFAULT_GPU_MEMORY,
        choices=GPU_MEMORY_POLICIES,
        help="on-demand: take GPU memory as needed; framework-default: JAX's 75 %% of the card "
        "up front, TensorFlow's nearly all (default: on-demand)",
    )
    run.add_argument(
        "--opt-in",
        action="append",
        default=[],
        choices=sorted(OPTIONS),
        metavar="CHANGE",
        help="a change that is off until measured, recorded in the result; repeatable: "
        + "; ".join(f"{name}: {what}" for name, what in OPTIONS.items()),
    )
    add_price_options(run)

    verify = commands.add_parser(
        "verify", help="accept the machine: every GPU's health, link, speed and the verdict"
    )
    verify.add_argument(
        "--backend",
        default="tensorflow",
        choices=BACKENDS,
        help="Keras backend to check (default: tensorflow)",
    )
    verify.add_argument(
        "--level",
        default="full",
        choices=["quick", "full"],
        help="quick: seconds, no load (count, ECC, remaps, Xids, persistence); full: adds the "
        "probes on every GPU and the checks under load (default: full)",
    )
    verify.add_argument(
        "--expect-gpus",
        type=positive_int,
        metavar="N",
        help="fewer than N GPUs is a FAIL (default on EC2: the instance type's count)",
    )
    verify.add_argument(
        "--expect-gpu",
        action="store_true",
        help="no usable NVIDIA GPU is a FAIL (default: the CPU path is checked)",
    )
    verify.add_argument(
        "--no-workload",
        action="store_true",
        help="skip the short training run of the text's Reuters model",
    )
    verify.add_argument(
        "--no-imds",
        action="store_true",
        help="do not ask EC2 instance metadata how many GPUs this instance type has",
    )
    verify.add_argument("--json", action="store_true", help="machine-readable output")

    report = commands.add_parser("report", help="report.md, report.html and results.csv")
    report.add_argument(
        "results",
        nargs="+",
        type=Path,
        metavar="RESULT",
        help="result files or folders of them (searched recursively)",
    )
    report.add_argument("--out", type=Path, required=True, help="folder to write the report to")
    report.add_argument("--title", default="dlbench report")
    report.add_argument(
        "--campaign",
        type=Path,
        help="campaign.json of `dlcloud bench`: rank its instance types above the report",
    )

    compare = commands.add_parser("compare", help="ratios of B's figures to A's, with spread")
    compare.add_argument("a", type=Path, help="result file or folder (the baseline)")
    compare.add_argument("b", type=Path, help="result file or folder")
    return parser


def add_price_options(parser: argparse.ArgumentParser) -> None:
    """How this machine is priced (run's cost figures)."""
    price = parser.add_argument_group("cost (first that applies: flag, EC2 metadata, electricity)")
    price.add_argument("--price-per-hour", type=non_negative, help="what this machine costs, $/h")
    price.add_argument("--instance-type", help="EC2 type to price from the catalog, e.g. g5.xlarge")
    price.add_argument("--region", help="EC2 region for --instance-type (default: us-east-1)")
    price.add_argument(
        "--no-imds",
        action="store_true",
        help="do not ask EC2 instance metadata which instance this is",
    )
    price.add_argument(
        "--electricity-price",
        type=non_negative,
        help="workstation: $ per kWh, times the GPU energy measured by NVML",
    )
    price.add_argument(
        "--amortisation-per-hour",
        type=non_negative,
        help="workstation: hardware cost per hour of use, added to electricity",
    )


def price_inputs(args: argparse.Namespace) -> PriceInputs:
    """The cost options as plain values, checked against the catalog before any work starts."""
    if args.region is not None and args.instance_type is None:
        raise UsageError("--region prices --instance-type; pass both, or neither")
    if args.region is not None:
        try:
            check_region(args.region)
        except RegionError as error:
            raise UsageError(str(error)) from None
    if args.amortisation_per_hour is not None and args.electricity_price is None:
        raise UsageError(
            "--amortisation-per-hour is added to --electricity-price; pass both, or neither"
        )
    if args.instance_type is not None:
        try:
            Catalog.load().get(args.instance_type)
        except CatalogError as error:
            raise UsageError(f"--instance-type: {error}") from None
    return PriceInputs(
        price_per_hour=args.price_per_hour,
        instance_type=args.instance_type,
        region=args.region,
        ask_imds=not args.no_imds,
        electricity_price=args.electricity_price,
        amortisation_per_hour=args.amortisation_per_hour or 0.0,
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


def checked_cache_dir(cli_value: str | None) -> Path:
    """The encode cache's folder, created and proven writable."""
    return writable_folder(
        data.resolve_cache_dir(cli_value),
        "the cache",
        f"pass --cache-dir (or set ${data.CACHE_DIR_ENV}) with a writable folder",
    )


def check_run_inputs(args: argparse.Namespace) -> None:
    """What argparse cannot see alone: combinations, and what this environment lacks."""
    if args.mode == "compiled" and args.backend not in ("jax", "tensorflow"):
        raise UsageError(
            f"--mode compiled is implemented for the jax and tensorflow backends, not "
            f"{args.backend}: use one of those, or --mode fit (the text's model.fit)"
        )
    if args.seed + args.repeats - 1 > MAX_SEED:
        raise UsageError(
            f"--seed {args.seed} with --repeats {args.repeats} runs past 2**32-1 ({MAX_SEED}); "
            f"the largest seed for {args.repeats} repeats is {MAX_SEED - args.repeats + 1}"
        )
    try:
        check_options(args.opt_in, args.mode, args.backend)
    except OptionError as error:
        raise UsageError(str(error)) from None
    if not backends.installed(args.backend):
        raise UsageError(
            f"the {args.backend} backend is not installed here: "
            f"pip install 'dlstation[{args.backend}]', or choose another --backend"
        )


def cmd_list() -> int:
    for workload in WORKLOADS.values():
        layers = " -> ".join(f"Dense({u}, {a})" for u, a in workload.layers())
        print(f"{workload.name}: {workload.title}")
        print(
            f"  data        keras.datasets.{workload.dataset}, num_words={workload.num_words}, "
            f"multi-hot inputs, {workload.labels.replace('_', '-')} labels"
        )
        print(f"  layers      {layers}")
        print(
            f"  compile     optimizer={workload.optimizer}, loss={workload.loss}, "
            f"metrics={list(workload.metrics)}"
        )
        print(
            f"  fit         epochs={workload.epochs}, batch_size={workload.batch_size}, "
            f"validation = first {workload.validation_samples:,} training samples"
        )
        print(f"  target      validation accuracy {workload.target_accuracy}")
        print(f"  source      {workload.reference}")
    return 0


def chosen_workloads(args: argparse.Namespace) -> tuple[Workload, ...]:
    names = args.workloads or list(WORKLOADS)
    try:
        chosen = [get_workload(name) for name in dict.fromkeys(names)]
    except UnknownWorkloadError as error:
        raise UsageError(str(error)) from None
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "target_accuracy": args.target_accuracy,
    }
    given = {key: value for key, value in overrides.items() if value is not None}
    return tuple(dataclasses.replace(w, **given) for w in chosen)


def output_path(args: argparse.Namespace) -> Path:
    """The result file, claimed (created empty, exclusively) before any training starts."""
    try:
        if args.output:
            path = Path(args.output).expanduser().resolve()
            output.refuse_existing(path, "--output")
        else:
            now = datetime.now(timezone.utc)
            name = output.default_name(socket.gethostname(), args.backend, args.mode, now)
            path = Path(args.out).expanduser().resolve() / name
        writable_folder(path.parent, "results", "pass --out with a writable folder")
        return output.claim(path, unique=not args.output)
    except output.OutputError as error:
        raise UsageError(str(error)) from None


def keras_home_for(
    workloads: tuple[Workload, ...], args: argparse.Namespace, cache_dir: Path
) -> Path | None:
    """Drop unreadable encode caches, verify the data files and link them for Keras's loader."""
    if args.synthetic:
        return None
    for workload in workloads:
        data.check_encode_cache(workload, cache_dir)
    data_dir = data.resolve_data_dir(args.data_dir)
    if data_dir is None:
        return None
    keras_home = None
    try:
        for workload in workloads:
            keras_home = data.prepare_keras_home(
                data.verify_data_file(workload, data_dir), cache_dir
            )
    except data.DataError as error:
        raise UsageError(str(error)) from None
    return keras_home


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    check_run_inputs(args)
    workloads = chosen_workloads(args)
    prices = price_inputs(args)
    cache_dir = checked_cache_dir(args.cache_dir)
    keras_home = keras_home_for(workloads, args, cache_dir)
    output = output_path(args)
    data_dir = data.resolve_data_dir(args.data_dir)
    plan = RunPlan(
        workloads=workloads,
        backend=args.backend,
        mode=args.mode,
        seed=args.seed,
        repeats=args.repeats,
        synthetic=args.synthetic,
        cache_dir=cache_dir,
        keras_home=keras_home,
        output=output,
        telemetry_interval_s=args.telemetry_interval,
        gpu_memory=args.gpu_memory,
        options=tuple(dict.fromkeys(args.opt_in)),
    )
    session = nvml.open_nvml()
    pricing = resolve_pricing(prices)
    document = new_document(plan, session, pricing, ["dlbench", *argv], data_dir=data_dir)
    runner = Runner(plan, document, Progress(quiet=args.quiet), session, pricing)
    try:
        return runner.execute()
    finally:
        if isinstance(session, nvml.NvmlSession):
            session.close()


def cmd_verify(args: argparse.Namespace) -> int:
    """Measure, judge, print; the exit code follows the verdict."""
    options = verify_measure.Options(
        backend=args.backend,
        level=args.level,
        expect_gpus=args.expect_gpus,
        expect_gpu=args.expect_gpu,
        use_imds=not args.no_imds,
        workload=not args.no_workload,
    )

    def say(text: str) -> None:
        if not args.json:
            print(f"dlbench verify: {text}", file=sys.stderr)

    seen = verify_measure.measure(options, say=say)
    checks = verify.judge(seen)
    final = verify.verdict(checks)
    if args.json:
        print(verify.as_json(checks, final, seen, socket.gethostname()))
    else:
        print(verify.render(checks, final, seen))
    return verify.EXIT_CODES[final]


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import model, render

    writable_folder(args.out.expanduser(), "the report", "pass --out with a writable folder")
    collection = model.collect(args.results)
    for _, why in collection.refused:
        print(f"dlbench: skipped {why}", file=sys.stderr)
    if not collection.results and not collection.verifies and args.campaign is None:
        raise UsageError("no dlbench results among the given paths; nothing to report")
    try:
        if args.campaign is not None:
            from bench.report import ranking

            paths = ranking.write(collection, args.campaign, args.out, args.title)
        else:
            paths = render.write(collection, args.out, args.title)
    except render.ReportWriteError as error:
        print(f"dlbench: {error.strerror}", file=sys.stderr)
        return 1
    print(f"report: {paths['html']} (also {paths['markdown'].name}, {paths['csv'].name})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.report import compare, model

    try:
        a = compare.side(model.collect([args.a]), str(args.a))
        b = compare.side(model.collect([args.b]), str(args.b))
        compare.print_to_pipe(compare.render(a, b))
    except compare.CompareError as error:
        raise UsageError(str(error)) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "verify":
            return cmd_verify(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "compare":
            return cmd_compare(args)
        return cmd_run(args, argv)
    except UsageError as error:
        print(f"dlbench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
