"""Every transcript in the guides is what the code prints now, ids, times and figures masked.

Each marked block is recorded afresh by its script (tests/docs/transcripts/) and compared
with the committed text; `make docs` rewrites them.
"""

from __future__ import annotations

import pytest

from tests.docs import transcript


def cases() -> list[object]:
    return [
        pytest.param(
            block,
            id=block.name,
            marks=[getattr(pytest.mark, mark) for mark in transcript.load(block.name).marks],
        )
        for block in transcript.all_blocks()
    ]


@pytest.mark.parametrize("block", cases())
def test_committed_transcript_is_what_the_code_prints(block: transcript.Block) -> None:
    diff = transcript.difference(block, transcript.record(block.name))
    assert not diff, (
        f"the transcript {block.name} no longer matches what the code prints; `make docs` "
        f"records it again (then read the change in git diff):\n{diff}"
    )
