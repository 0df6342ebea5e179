"""`dlcloud bench`'s options: declared for the parser, then checked into one Options value.

Every value is checked before anything is planned or launched: a refused one costs nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.exitcodes import USAGE
from bench.training.backends import BACKENDS
from bench.training.workloads import WORKLOADS
from cloud import options
from cloud.aws import CloudError
from cloud.options import MachineOptions
from cloud.playbooks import CLONE

HOST_NAME_MAX = 63  # guard.check_name's limit: a DNS label


@dataclass(frozen=True)
class Options:
    """What the user asked for, parsed at the edge."""

    types: list[str]
    name: str
    folder: Path
    machine: MachineOptions = field(default_factory=lambda: MachineOptions(ttl_text="2h"))
    workloads: list[str] = field(default_factory=list)
    mode: str | None = None
    backend: str | None = None
    repeats: int | None = None
    bench_args: str = ""
    ansible_args: list[str] = field(default_factory=list)
    yes: bool = False

    def host(self, instance_type: str) -> str:
        """NAME-<type>, a host-name-like label: g5.xlarge becomes g5-xlarge."""
        return f"{self.name}-{re.sub(r'[^A-Za-z0-9]+', '-', instance_type).strip('-')}"

    def dlbench_args(self) -> list[str]:
        """What `dlbench run` gets on every host, before its price."""
        args = list(self.workloads)
        for flag, value in (("--mode", self.mode), ("--backend", self.backend)):
            if value:
                args += [flag, value]
        if self.repeats:
            args += ["--repeats", str(self.repeats)]
        return args + shlex.split(self.bench_args)


def add_parser(commands: Any) -> None:
    """The `dlcloud bench` subcommand and its options."""
    bench = commands.add_parser(
        "bench", help="benchmark instance types in parallel, rank them by cost, leave nothing"
    )
    bench.add_argument("--types", required=True, help="e.g. g5.xlarge,g6.xlarge,g6e.xlarge")
    bench.add_argument("--name", help="campaign name; the same name resumes (default: a stamp)")
    options.add_machine_options(bench, ttl_default="2h")
    bench.add_argument("--workloads", help="comma-separated, e.g. imdb,reuters (default: all)")
    bench.add_argument("--mode", choices=["fit", "compiled"], help="dlbench run --mode")
    bench.add_argument("--backend", help="dlbench run --backend (default: tensorflow)")
    bench.add_argument("--repeats", type=int, help="dlbench run --repeats")
    bench.add_argument(
        "--bench-args", default="", help='more for `dlbench run`, e.g. "--synthetic --epochs 2"'
    )
    bench.add_argument(
        "--ansible-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="passed to ansible-playbook (repeat it), e.g. --ansible-arg=-e "
        "--ansible-arg=ansible_user=ec2-user",
    )
    bench.add_argument(
        "--out", type=Path, help="campaign folder (default: results/campaigns/NAME in the clone)"
    )
    bench.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def options_from(args: argparse.Namespace, now: datetime) -> Options:
    """The campaign's options, every one checked before anything is planned or launched."""
    name = options.checked_name(args.name, f"bench-{now:%Y%m%d-%H%M%S}")
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    if not types or len(set(types)) != len(types):
        raise CloudError("--types: name each instance type once, e.g. g5.xlarge,g6.xlarge", USAGE)
    workloads = [w for w in (args.workloads or "").split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown or (args.workloads is not None and not workloads):
        raise CloudError(
            f"--workloads {args.workloads!r}: valid workloads are {', '.join(sorted(WORKLOADS))}",
            USAGE,
        )
    if args.backend is not None and args.backend not in BACKENDS:
        raise CloudError(
            f"--backend {args.backend!r}: valid backends are {', '.join(BACKENDS)}", USAGE
        )
    if args.repeats is not None and args.repeats < 1:
        raise CloudError(f"--repeats {args.repeats}: must be at least 1", USAGE)
    try:
        shlex.split(args.bench_args)
    except ValueError as error:
        raise CloudError(f"--bench-args {args.bench_args!r}: {error}", USAGE) from None
    result = Options(
        types=types,
        name=name,
        folder=campaign_folder(args.out, name),
        machine=options.machine_options(args),
        workloads=workloads,
        mode=args.mode,
        backend=args.backend,
        repeats=args.repeats,
        bench_args=args.bench_args,
        ansible_args=list(args.ansible_arg),
        yes=args.yes,
    )
    longest = max((result.host(t) for t in types), key=len)
    if len(longest) > HOST_NAME_MAX:
        room = HOST_NAME_MAX - (len(longest) - len(name))
        raise CloudError(
            f"--name {name!r}: the host {longest!r} would be {len(longest)} characters, over "
            f"{HOST_NAME_MAX}; use a --name of at most {room} characters",
            USAGE,
        )
    return result


def campaign_folder(out: Path | None, name: str) -> Path:
    """--out (a folder, made if missing, somewhere writable), else results/campaigns/NAME."""
    folder = (out or CLONE / "results" / "campaigns" / name).resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise CloudError(f"--out {folder}: {existing} is a file, not a folder", USAGE)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CloudError(f"--out {folder}: {existing} is not writable; pick another --out", USAGE)
    return folder
