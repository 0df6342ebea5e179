"""Allow `python -m bench`."""

import sys

from bench.entry import dlbench

sys.exit(dlbench())
