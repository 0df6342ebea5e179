"""bench/README.md, dlbench report and compare: compare on the recorded test results."""

from tests.docs.transcript import REPO, Session, Transcript


def record(session: Session) -> None:
    # In the clone, so that the fixtures' paths read as a reader types them.
    session.run(
        "dlbench compare tests/data/results/fixture-cpu-b.json"
        " tests/data/results/fixture-gpu-a.json",
        cwd=REPO,
    )


TRANSCRIPT = Transcript(record)
