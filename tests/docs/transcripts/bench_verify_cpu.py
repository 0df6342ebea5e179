"""bench/README.md, dlbench verify: the whole machine at the full level, on whatever runs it.

Recorded on a machine without a GPU, as CI is: the CPU path (backend, throughput, the short run).
"""

from tests.docs.transcript import Session, Transcript


def record(session: Session) -> None:
    session.run("dlbench verify --no-imds")


TRANSCRIPT = Transcript(record, marks=("slow",))
