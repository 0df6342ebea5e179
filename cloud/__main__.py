"""Allow `python -m cloud`."""

import sys

from cloud.entry import dlcloud

sys.exit(dlcloud())
