"""The commands' entry points: their imports take seconds, and a Ctrl-C while they load is an
ordinary stop (exit 130 and one line), not a traceback from deep inside a library."""

from __future__ import annotations

import importlib
import sys

from bench.exitcodes import INTERRUPTED


def run(command: str, module: str) -> int:
    """Import module (a command's CLI) and run its main()."""
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        print(f"{command}: interrupted while starting", file=sys.stderr)
        return INTERRUPTED
    return int(main())


def dlbench() -> int:
    return run("dlbench", "bench.cli")
