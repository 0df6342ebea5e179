"""dlbench: train the text's models and verify what a machine does with them.

This module parses and prints; bench/app.py does the work (the same layer bench.api calls).
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from bench import app, exitcodes
from bench.app import MAX_SEED, UsageError
from bench.machine import verify_measure
from bench.machine.telemetry import DEFAULT_INTERVAL_S
from bench.results import output
from bench.training import data
from bench.training.backends import BACKENDS, DEFAULT_GPU_MEMORY, GPU_MEMORY_POLICIES
from bench.training.modes import MODES
from bench.training.modes.options import OPTIONS
from bench.training.progress import Progress
from bench.training.runner import RunInterruptedError, signals_raise
from bench.training.workloads import WORKLOADS

EXIT_USAGE = exitcodes.USAGE


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


def prices(args: argparse.Namespace) -> app.Prices:
    return app.Prices(
        price_per_hour=args.price_per_hour,
        instance_type=args.instance_type,
        region=args.region,
        ask_imds=not args.no_imds,
        electricity_price=args.electricity_price,
        amortisation_per_hour=args.amortisation_per_hour,
    )


def run_request(args: argparse.Namespace) -> app.RunRequest:
    return app.RunRequest(
        workloads=tuple(args.workloads),
        backend=args.backend,
        mode=args.mode,
        epochs=args.epochs,
        batch_size=args.batch_size,
        target_accuracy=args.target_accuracy,
        seed=args.seed,
        repeats=args.repeats,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        synthetic=args.synthetic,
        out=args.out,
        output=args.output,
        telemetry_interval_s=args.telemetry_interval,
        gpu_memory=args.gpu_memory,
        opt_in=tuple(args.opt_in),
        prices=prices(args),
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
    return exitcodes.OK


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    # From before the result file is claimed: a stop at any moment exits by the table, its lock
    # let go and a file that never received a result removed.
    try:
        with signals_raise():
            prepared = app.prepare_run(run_request(args))
            code, _ = app.run(prepared, ["dlbench", *argv], Progress(quiet=args.quiet))
    except RunInterruptedError as stop:
        print(f"dlbench: {stop}", file=sys.stderr)
        return app.exit_code(128 + stop.signum)
    finally:
        for path in output.CLAIMED:
            output.release(path)  # only a file that never received a result
    return code


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

    verified = app.verify(options, say)
    if args.json:
        print(verified.json())
    else:
        print(verified.text())
    return verified.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import render

    try:
        reported = app.report(args.results, args.out, args.title, args.campaign)
    except render.ReportWriteError as error:
        print(f"dlbench: {error.strerror}", file=sys.stderr)
        return exitcodes.FAILED
    for why in reported.skipped:
        print(f"dlbench: skipped {why}", file=sys.stderr)
    paths = reported.paths
    print(f"report: {paths['html']} (also {paths['markdown'].name}, {paths['csv'].name})")
    return exitcodes.OK


def cmd_compare(args: argparse.Namespace) -> int:
    print(app.compare(args.a, args.b))  # a reader that stopped early: see bench.entry
    return exitcodes.OK


def dispatch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.command == "list":
        return cmd_list()
    if args.command == "verify":
        return cmd_verify(args)
    if args.command == "report":
        return cmd_report(args)
    if args.command == "compare":
        return cmd_compare(args)
    return cmd_run(args, argv)


def internal_error(command: str) -> int:
    """A bug, not a verdict: the traceback on stderr, then one line saying so; exit 70."""
    traceback.print_exc(file=sys.stderr)
    print(
        f"dlbench: internal error in `dlbench {command}` (a bug in dlstation, exit "
        f"{exitcodes.INTERNAL}): the traceback is above; please report it",
        file=sys.stderr,
    )
    return exitcodes.INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args, argv)
    except UsageError as error:
        print(f"dlbench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except output.NoRoomError as error:
        print(f"dlbench: {error.strerror}", file=sys.stderr)
        return exitcodes.FAILED
    except KeyboardInterrupt:
        print("dlbench: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except Exception:
        return internal_error(args.command)
