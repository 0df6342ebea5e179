"""dlbench: train the text's models and verify what a machine does with them."""

from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import data, fingerprint, hostinfo, nvml, results, verify
from bench.backends import BACKENDS, DEFAULT_GPU_MEMORY, GPU_MEMORY_POLICIES
from bench.cost import resolve_pricing
from bench.modes import MODES
from bench.modes.options import OPTIONS, OptionError
from bench.modes.options import check as check_options
from bench.progress import Progress
from bench.runner import Runner, RunPlan, run_plan, short_check_plan
from bench.telemetry import DEFAULT_INTERVAL_S, Sampler
from bench.workloads import WORKLOADS, UnknownWorkloadError, get_workload
from bench.workloads.spec import Workload

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
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
    parser = argparse.ArgumentParser(
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
        "--seed", type=int, default=0, help="random seed; repeat i uses seed+i (default: 0)"
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
        type=float,
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

    verify = commands.add_parser("verify", help="check the GPU, the backend and their speed")
    verify.add_argument(
        "--backend",
        default="tensorflow",
        choices=BACKENDS,
        help="Keras backend to check (default: tensorflow)",
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

    compare = commands.add_parser("compare", help="ratios of B's figures to A's, with spread")
    compare.add_argument("a", type=Path, help="result file or folder (the baseline)")
    compare.add_argument("b", type=Path, help="result file or folder")
    return parser


def add_price_options(parser: argparse.ArgumentParser) -> None:
    """How this machine is priced (run's cost figures)."""
    price = parser.add_argument_group("cost (first that applies: flag, EC2 metadata, electricity)")
    price.add_argument("--price-per-hour", type=float, help="what this machine costs, $/h")
    price.add_argument("--instance-type", help="EC2 type to price from the catalog, e.g. g5.xlarge")
    price.add_argument("--region", help="EC2 region for --instance-type (default: us-east-1)")
    price.add_argument(
        "--no-imds",
        action="store_true",
        help="do not ask EC2 instance metadata which instance this is",
    )
    price.add_argument(
        "--electricity-price",
        type=float,
        help="workstation: $ per kWh, times the GPU energy measured by NVML",
    )
    price.add_argument(
        "--amortisation-per-hour",
        type=float,
        help="workstation: hardware cost per hour of use, added to electricity",
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
    """The result file's path, checked writable before any training starts."""
    if args.output:
        path = Path(args.output).expanduser().resolve()
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        name = f"dlbench-{socket.gethostname()}-{args.backend}-{args.mode}-{stamp}.json"
        path = Path(args.out).expanduser().resolve() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise UsageError(
            f"cannot write results to {path.parent} ({error.strerror or error}); "
            "pass --out with a writable folder"
        ) from None
    return path


def keras_home_for(workloads: tuple[Workload, ...], args: argparse.Namespace) -> Path | None:
    """Verify the data files up front and link them where Keras's loader will look."""
    if args.synthetic:
        return None
    data_dir = data.resolve_data_dir(args.data_dir)
    if data_dir is None:
        return None
    cache_dir = data.resolve_cache_dir(args.cache_dir)
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
    if args.mode == "compiled" and args.backend not in ("jax", "tensorflow"):
        raise UsageError(
            f"--mode compiled is implemented for the jax and tensorflow backends, not "
            f"{args.backend}: use one of those, or --mode fit (the text's model.fit)"
        )
    try:
        check_options(args.opt_in, args.mode, args.backend)
    except OptionError as error:
        raise UsageError(str(error)) from None
    workloads = chosen_workloads(args)
    keras_home = keras_home_for(workloads, args)
    output = output_path(args)
    data_dir = data.resolve_data_dir(args.data_dir)
    plan = RunPlan(
        workloads=workloads,
        backend=args.backend,
        mode=args.mode,
        seed=args.seed,
        repeats=args.repeats,
        synthetic=args.synthetic,
        cache_dir=data.resolve_cache_dir(args.cache_dir),
        keras_home=keras_home,
        output=output,
        telemetry_interval_s=args.telemetry_interval,
        gpu_memory=args.gpu_memory,
        options=tuple(dict.fromkeys(args.opt_in)),
    )
    document = results.new_document(
        ["dlbench", *argv],
        plan.settings(data_dir),
        hostinfo.describe_host(),
        hostinfo.describe_code(),
    )
    session = nvml.open_nvml()
    pricing = resolve_pricing(args)
    document["gpus"] = fingerprint.gpus(session)
    document["nvml"] = session if isinstance(session, str) else None
    document["pricing"] = pricing if isinstance(pricing, str) else pricing.describe()
    runner = Runner(plan, document, Progress(quiet=args.quiet), session, pricing)
    try:
        return runner.execute()
    finally:
        if isinstance(session, nvml.NvmlSession):
            session.close()


def cmd_verify(args: argparse.Namespace) -> int:
    """Measure (NVML, probe, a short run), judge, print; the exit code follows the verdict."""
    session = nvml.open_nvml()
    gpus = fingerprint.gpus(session)
    sampler = None
    if isinstance(session, nvml.NvmlSession):
        sampler = Sampler(session, interval_s=0.1).start()
        sampler.set_phase("probe")
    if not args.json:
        print(
            f"dlbench verify: probing {args.backend} (matrix products, memory copy)...",
            file=sys.stderr,
        )
    probe = verify.run_probe(args.backend)
    telemetry = sampler.stop() if sampler is not None else None
    seen = verify.Observations(
        backend=args.backend,
        expect_gpu=args.expect_gpu,
        nvml_reason=session if isinstance(session, str) else None,
        gpus=gpus,
        probe=probe,
    )
    if telemetry and telemetry["devices"]:
        device = telemetry["devices"][0]
        seen.throttle_seen = device["throttle_seen"]
        seen.clocks_mhz = device["phases"].get("probe", {}).get("sm_clock_mhz", {})
    if not args.no_workload and "error" not in probe:
        if not args.json:
            print("dlbench verify: training the text's reuters model briefly...", file=sys.stderr)
        seen.workload = verify_workload(args.backend, session)
        seen.reference = verify.find_reference(gpus[0]["name"] if gpus else None, args.backend)
    if isinstance(session, nvml.NvmlSession):
        session.close()
    checks = verify.judge(seen)
    final = verify.verdict(checks)
    if args.json:
        print(verify.as_json(checks, final, seen))
    else:
        print(verify.render(checks, final, args.backend, args.expect_gpu))
    return verify.EXIT_CODES[final]


def verify_workload(backend: str, session: nvml.NvmlSession | str) -> dict[str, Any]:
    """Three epochs of reuters on synthetic data through the normal runner; the run record."""
    with tempfile.TemporaryDirectory(prefix="dlbench-verify-") as folder:
        plan = short_check_plan(backend, 3, Path(folder), Path(folder) / "verify.json")
        document = run_plan(plan, session, "verify runs are not priced", ["dlbench", "verify"])
        run: dict[str, Any] = document["runs"][0]
        return run


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import model, render

    collection = model.collect(args.results)
    for _, why in collection.refused:
        print(f"dlbench: skipped {why}", file=sys.stderr)
    if not collection.results:
        raise UsageError("no dlbench results among the given paths; nothing to report")
    paths = render.write(collection, args.out, args.title)
    print(f"report: {paths['html']} (also {paths['markdown'].name}, {paths['csv'].name})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.report import compare, model

    try:
        a = compare.side(model.collect([args.a]), str(args.a))
        b = compare.side(model.collect([args.b]), str(args.b))
        print(compare.render(a, b))
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
