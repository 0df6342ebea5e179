"""bench/README.md, dlbench verify: four A100s, one with a pending row remap.

The GPUs are the tests' fake NVML (scenario row_remap_pending of tests/fakes/nvml.py), loaded
as pynvml by the real dlbench; the quick level puts no load on them, so nothing else is faked.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.docs.transcript import REPO, Session, Transcript


def record(session: Session) -> None:
    shim = Path(__file__).resolve().parent.parent / "fake_pynvml"
    session.env["PYTHONPATH"] = os.pathsep.join([str(shim), str(REPO), session.env["PYTHONPATH"]])
    session.env["DLSTATION_FAKE_NVML"] = "row_remap_pending"
    session.run("dlbench verify --level quick --expect-gpus 4", expect=1)


TRANSCRIPT = Transcript(record)
