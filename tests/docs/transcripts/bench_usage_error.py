"""bench/README.md, Running: bad input is refused in one line, before any work, exit 2."""

from tests.docs.transcript import Session, Transcript


def record(session: Session) -> None:
    session.run("dlbench run --seed -5", expect=2)


TRANSCRIPT = Transcript(record)
