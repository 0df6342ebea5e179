"""Record the guides' transcripts in place (`make docs`), or check them (`--check`).

python -m tests.docs [--check] [NAME...]
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys

from tests import conftest
from tests.docs import transcript

# conftest guards this process too (moto's server runs in it); its log folder is pytest's to
# remove, and here there is no pytest.
atexit.register(shutil.rmtree, conftest.GUARD_LOG.parent, True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.docs", description=__doc__)
    parser.add_argument("names", nargs="*", help="transcripts to record (default: every one)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare fresh recordings with the committed blocks (masked); write nothing",
    )
    parser.add_argument("--list", action="store_true", help="name each marked block and its guide")
    args = parser.parse_args(argv)
    try:
        if args.list:
            for block in transcript.all_blocks():
                where = block.guide.relative_to(transcript.REPO)
                print(f"{block.name:24} {where}:{block.start + 1}")
            return 0
        if args.check:
            return check(args.names)
        failures = transcript.regenerate(args.names)
    except transcript.TranscriptError as error:
        print(f"python -m tests.docs: {error}", file=sys.stderr)
        return 2
    unmarked = transcript.unmarked_transcripts()
    for place in unmarked:
        print(f"{place}: commands without a transcript or recorded marker", file=sys.stderr)
    return 1 if failures or unmarked else 0


def check(names: list[str]) -> int:
    stale = 0
    for block in transcript.all_blocks():
        if names and block.name not in names:
            continue
        try:
            diff = transcript.difference(block, transcript.record(block.name))
        except transcript.TranscriptError as error:
            print(f"FAILED   {block.name}: {error}")
            stale += 1
            continue
        print(f"{'differs' if diff else 'matches'}  {block.name}")
        if diff:
            print(diff)
            stale += 1
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
