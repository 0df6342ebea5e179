"""The transcript machinery: markers, masks, the comparison failing on a changed line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.docs import transcript
from tests.docs.transcript import Block, Transcript, TranscriptError

PLAIN = Transcript(lambda session: None)


def guide(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(text)
    return path


def test_every_block_of_commands_in_the_guides_is_marked() -> None:
    assert transcript.unmarked_transcripts() == [], (
        "mark each with <!-- transcript: NAME --> (and a script in tests/docs/transcripts/), "
        "or <!-- recorded: why it cannot be recorded here -->"
    )


def test_every_marked_block_has_its_script() -> None:
    for block in transcript.all_blocks():
        assert callable(transcript.load(block.name).record), block.name


def test_what_varies_is_masked_and_what_the_code_says_is_not() -> None:
    one = (
        "lab: i-d4526fb46022d9679 running at 54.214.178.223 until 2026-11-27 16:11 UTC\n"
        "cost: ran 0h00m, $0.01; age 0.0h; 3,196 samples/s; /tmp/tmpab_1x/keys\n"
        "name  id\n----  -------------------\n"
    )
    two = (
        "lab: i-0b752d7f954c42b3e running at 54.214.26.190 until 2026-12-02 01:48 UTC\n"
        "cost: ran 1h02m, $12.50; age 10.4h; 18,320 samples/s; /tmp/tmpZZ/keys\n"
        "name    id\n------  -----\n"
    )
    assert transcript.masked(one, PLAIN) == transcript.masked(two, PLAIN)
    # Inputs typed on the command line stay: loopback and the documentation range.
    assert "203.0.113.7/32" in transcript.masked("--ssh-cidr 203.0.113.7/32", PLAIN)[0]
    for changed in ("lab: i-d4526fb46022d9679 stopped", "software   picked by its Python"):
        assert transcript.masked(changed, PLAIN) != transcript.masked(one.splitlines()[0], PLAIN)


def test_optional_and_unordered_lines() -> None:
    rules = Transcript(lambda session: None, optional=(r"still in",), unordered=(r"^host ",))
    assert transcript.masked("a\nhost b\nhost a\nz\nstill in verify\n", rules) == transcript.masked(
        "a\nhost a\nhost b\nz\n", rules
    )
    # Only a run of such lines is sorted: a line that moved past another stays a difference.
    assert transcript.masked("host b\nz\nhost a\n", rules) != transcript.masked(
        "host a\nz\nhost b\n", rules
    )


def test_blocks_are_found_and_replaced_in_place(tmp_path: Path) -> None:
    path = guide(
        tmp_path,
        "intro\n\n<!-- transcript: bench-list -->\n```text\nold\nlines\n```\n\nafter\n",
    )
    (block,) = transcript.blocks(path)
    assert (block.name, block.text) == ("bench-list", "old\nlines\n")
    transcript.replace(block, "$ new\n")
    assert path.read_text() == (
        "intro\n\n<!-- transcript: bench-list -->\n```text\n$ new\n```\n\nafter\n"
    )


def test_a_marker_away_from_its_fence_or_an_open_fence_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TranscriptError, match="right above"):
        transcript.blocks(guide(tmp_path, "<!-- transcript: x -->\n\n```text\n$ a\n```\n"))
    with pytest.raises(TranscriptError, match="never closed"):
        transcript.blocks(guide(tmp_path, "<!-- transcript: x -->\n```text\n$ a\n"))


def test_an_unmarked_block_of_commands_is_found(tmp_path: Path) -> None:
    for name in transcript.GUIDES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "README.md").write_text(
        "```sh\nmake test\n```\n\n<!-- recorded: on an H100 -->\n```text\n$ a\n```\n\n"
        "```text\n$ dlbench list\nimdb\n```\n"
    )
    assert transcript.unmarked_transcripts(tmp_path) == ["README.md:10"]


def committed(name: str) -> Block:
    (block,) = [b for b in transcript.all_blocks() if b.name == name]
    return block


def test_a_changed_committed_line_fails_with_a_readable_diff() -> None:
    block = committed("bench-list")
    fresh = transcript.record(block.name)
    assert transcript.difference(block, fresh) == ""
    edited = block.text.replace("epochs=20, batch_size=512", "epochs=20, batch_size=256", 1)
    assert edited != block.text
    diff = transcript.difference(Block(block.guide, block.name, 0, 0, edited), fresh)
    assert (
        "-  fit  epochs=20, batch_size=256" in diff and "+  fit  epochs=20, batch_size=512" in diff
    )
    assert "(committed, masked)" in diff


def test_regenerate_writes_the_fresh_recording_in_place(tmp_path: Path) -> None:
    for name in transcript.GUIDES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(transcript.REPO / "bench" / "README.md", tmp_path / "bench" / "README.md")
    stale = committed("bench-usage-error")
    copy = tmp_path / "bench" / "README.md"
    copy.write_text(copy.read_text().replace(stale.text, "$ dlbench run --seed -5\nstale\n"))
    assert transcript.regenerate(["bench-usage-error"], root=tmp_path) == []
    assert copy.read_text() == (transcript.REPO / "bench" / "README.md").read_text()
    with pytest.raises(TranscriptError, match="no block is marked"):
        transcript.regenerate(["no-such-transcript"], root=tmp_path)


def test_every_script_has_its_block() -> None:
    scripts = {
        path.stem.replace("_", "-")
        for path in (transcript.REPO / "tests" / "docs" / "transcripts").glob("*.py")
        if path.stem != "__init__"
    }
    assert scripts == {block.name for block in transcript.all_blocks()}


def test_a_command_that_exits_otherwise_fails_the_recording() -> None:
    def script(session: transcript.Session) -> None:
        session.run("echo refused; exit 3", expect=2)

    with pytest.raises(TranscriptError, match=r"exited 3, expected 2; it printed:\nrefused"):
        transcript.record("exits", Transcript(script))


def test_the_scratch_folder_is_shown_under_its_fixed_name() -> None:
    def script(session: transcript.Session) -> None:
        session.run("mkdir keys && cd keys && pwd")

    text = transcript.record("folder", Transcript(script, display_dir="/tmp/wk"))
    assert text == "$ mkdir keys && cd keys && pwd\n/tmp/wk/keys\n"


def test_a_command_reaching_beyond_loopback_fails_the_recording() -> None:
    # 192.0.2.1 is TEST-NET-1: the guard refuses it before any packet leaves.
    dial = "import socket; socket.create_connection(('192.0.2.1', 9), timeout=1)"

    def script(session: transcript.Session) -> None:
        session.run(f'python -c "{dial}" || true')

    with pytest.raises(TranscriptError, match="reached beyond loopback"):
        transcript.record("dial", Transcript(script))
