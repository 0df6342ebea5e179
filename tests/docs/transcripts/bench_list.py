"""bench/README.md, The workloads: the text's definitions as dlbench prints them."""

from tests.docs.transcript import Session, Transcript


def record(session: Session) -> None:
    session.run("dlbench list")


TRANSCRIPT = Transcript(record)
