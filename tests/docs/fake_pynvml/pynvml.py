"""pynvml as the tests' fake NVML answers for one machine scenario ($DLSTATION_FAKE_NVML).

Put this folder first on PYTHONPATH to show what dlbench prints on a machine that cannot be
here, such as four A100s with a pending row remap.
"""

import os
import sys

from tests.fakes.nvml import machine

sys.modules[__name__] = machine(os.environ["DLSTATION_FAKE_NVML"])  # type: ignore[assignment]
