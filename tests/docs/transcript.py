"""Transcripts in the guides: recorded by scripts, compared with what varies masked.

A guide marks a fenced block as a transcript with `<!-- transcript: NAME -->` on the line
before it; `tests/docs/transcripts/NAME.py` (hyphens as underscores) records it by running
each command for real and writing `$ command` and what it printed. The committed block keeps
the real output of a real run; only the scratch folder is shown under a fixed name. A block
that cannot be recorded on an ordinary machine (a GPU, a provisioned host) carries
`<!-- recorded: WHY -->` instead.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import REPO, free_port
from tests.fakes.aws import FAKE_CREDENTIALS
from tests.netguard import loopback_guard

SCRIPTS = "tests.docs.transcripts"
# Markdown files whose transcripts are recorded: every guide and the front page.
GUIDES = (
    "README.md",
    "bench/README.md",
    "bench/perf/README.md",
    "cloud/README.md",
    "playbooks/README.md",
    "tests/README.md",
)
MARKER = re.compile(r"^<!-- transcript: ([a-z0-9-]+) -->$")
RECORDED = re.compile(r"^<!-- recorded: .+ -->$")
FENCE = re.compile(r"^(```+)")
COMMAND_TIMEOUT_S = 900
# Set to 1 to keep each transcript's scratch folder (named in its error) for a look inside.
KEEP_ENV = "DLSTATION_DOCS_KEEP"

Mask = tuple[str, str]

# What differs between two runs of the same commands, replaced in both texts before comparing.
DEFAULT_MASKS: tuple[Mask, ...] = (
    (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2}| UTC)?", "<time>"),
    (r"\b\d{8}T\d{6}Z\b", "<time>"),
    (r"\b\d{4}-\d{2}-\d{2}\b", "<date>"),
    (r"\b(i|ami|sg|vol|subnet|vpc|eni|key|r|snap|sir)-[0-9a-f]{8,17}\b", r"\1-…"),
    # Addresses AWS hands out; loopback and the documentation range typed as input stay.
    (r"\b(?!127\.|0\.0\.0\.0|203\.0\.113\.)\d{1,3}(\.\d{1,3}){3}\b", "<ip>"),
    (r"\b\d+h\d{2}m\b|\b\d+m\d{2}s\b|\b\d+\.\d+h\b", "<duration>"),
    (r"\b\d+(\.\d+)? ?(s|ms|us)\b", "<duration>"),
    (r"\$ *\d[\d,]*(\.\d+)?", "$<cost>"),
    (r"\b\d[\d,]*(\.\d+)? ?(samples/s|[GT]FLOP/s|GB/s|MHz|MiB|MB)\b", r"<figure> \2"),
    (r"\b[\d.]+ instance-hours\b", "<figure> instance-hours"),
    (r"/tmp/tmp[\w-]+", "/tmp/<tmp>"),
)


@dataclass(frozen=True)
class Transcript:
    """How one transcript is recorded and compared."""

    record: Callable[[Session], None]
    # Marks for its test (motoserver, slow, realdata, ...).
    marks: tuple[str, ...] = ()
    # The scratch folder as the committed block shows it.
    display_dir: str = "/tmp/wk"
    # Masks beyond DEFAULT_MASKS, applied after them.
    masks: tuple[Mask, ...] = ()
    # Lines (masked) that may or may not appear, such as a heartbeat: left out of the comparison.
    optional: tuple[str, ...] = ()
    # Lines (masked) printed by parallel work: the order within a run of them is not compared.
    unordered: tuple[str, ...] = ()
    # A blank line between one command's output and the next command.
    spaced: bool = False


class TranscriptError(Exception):
    """A transcript could not be recorded: a command failed or misbehaved."""


@dataclass
class Session:
    """Runs commands in a scratch folder, as a user's shell would, and writes them down."""

    workdir: Path
    env: dict[str, str]
    spaced: bool = False
    lines: list[str] = field(default_factory=list)

    def run(
        self,
        command: str,
        expect: int = 0,
        show_exit: bool = False,
        timeout: float = 0,
        cwd: Path | None = None,
    ) -> str:
        """Run `command` with bash (in the scratch folder, or `cwd`); record it and its output.

        The output is stdout and stderr as one stream, as a terminal shows them.
        """
        if self.spaced and self.lines:
            self.lines.append("")
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd or self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout or COMMAND_TIMEOUT_S,
            check=False,
        )
        self.lines.append(f"$ {command}")
        self.lines.extend(done.stdout.splitlines())
        if show_exit:
            self.lines.append(f"exit {done.returncode}")
        if done.returncode != expect:
            raise TranscriptError(
                f"`{command}` exited {done.returncode}, expected {expect}; it printed:\n"
                + done.stdout[-4000:]
            )
        return done.stdout

    def note(self, text: str) -> None:
        """A line of the transcript that is not a command's output, such as a `# comment`."""
        self.lines.append(text)

    def write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.write_text(text)
        return path

    @contextlib.contextmanager
    def moto(self) -> Iterator[Any]:
        """moto's AWS server on 127.0.0.1 for the commands; yields an EC2 client of it."""
        import boto3
        from moto.server import ThreadedMotoServer

        # Its request log would land in the middle of the transcript's progress lines.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        url = f"http://127.0.0.1:{port}"
        try:
            # moto's backends are process-global: start from an empty account.
            request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
            urllib.request.urlopen(request).close()
            self.env.update(
                {
                    **FAKE_CREDENTIALS,
                    "AWS_ENDPOINT_URL": url,
                    "DLCLOUD_KEY_DIR": str(self.workdir / "keys"),
                    "DLCLOUD_INVENTORY": str(self.workdir / "dlcloud.yml"),
                }
            )
            yield boto3.client(
                "ec2",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            )
        finally:
            server.stop()


def base_env(workdir: Path) -> dict[str, str]:
    """The user's environment without their AWS settings, the tools of this venv first.

    Like the tests': the network guard in every Python process, metadata probes on a closed
    loopback port, the packaged price catalog, caches in the scratch folder.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DLCLOUD_"))}
    guard = Path(loopback_guard.__file__).resolve().parent
    env.update(
        {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(guard), env.get("PYTHONPATH")])),
            loopback_guard.LOG_ENV: str(workdir / "netguard-refused.log"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "DLSTATION_IMDS_URL": f"http://127.0.0.1:{free_port()}",
            "DLSTATION_CATALOG": str(workdir / "no-user-catalog.json"),
            "DLSTATION_VALIDATE_RESULTS": "1",
            "DLSTATION_CACHE_DIR": str(workdir / "cache"),
            "KERAS_HOME": str(workdir / "keras-home"),
            "MPLCONFIGDIR": str(workdir / "matplotlib"),
            "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
            "ANSIBLE_DEPRECATION_WARNINGS": "false",
            "PYTHONUNBUFFERED": "1",
            "LC_ALL": "C.UTF-8",
        }
    )
    env.pop(loopback_guard.ALLOW_ENV, None)
    return env


def load(name: str) -> Transcript:
    """The transcript NAME, from tests/docs/transcripts/NAME.py (hyphens as underscores)."""
    module = importlib.import_module(f"{SCRIPTS}.{name.replace('-', '_')}")
    transcript: Transcript = module.TRANSCRIPT
    return transcript


def record(name: str, transcript: Transcript | None = None) -> str:
    """Run transcript NAME's script in a fresh scratch folder; the block's new text."""
    transcript = transcript or load(name)
    workdir = Path(tempfile.mkdtemp(prefix=f"dlstation-docs-{name}-"))
    keep = os.environ.get(KEEP_ENV) == "1"
    refused = workdir / "netguard-refused.log"
    try:
        session = Session(workdir=workdir, env=base_env(workdir), spaced=transcript.spaced)
        try:
            transcript.record(session)
        except TranscriptError as error:
            where = f"scratch folder {workdir}" if keep else f"{KEEP_ENV}=1 keeps the folder"
            raise TranscriptError(f"{error}\n({where})") from None
        finally:
            if refused.is_file() and refused.read_text().strip():
                raise TranscriptError(
                    "a command reached beyond loopback:\n" + refused.read_text().strip()
                )
        text = "\n".join(line.rstrip() for line in session.lines) + "\n"
        return text.replace(str(workdir), transcript.display_dir)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def masked(text: str, transcript: Transcript) -> list[str]:
    """The lines to compare: what varies masked, spacing and optional lines left out."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw
        for pattern, replacement in (*DEFAULT_MASKS, *transcript.masks):
            line = re.sub(pattern, replacement, line)
        # Column widths follow the values: compare the cells, not the padding.
        line = re.sub(r"-{2,}", "--", re.sub(r"[ \t]{2,}", "  ", line)).rstrip()
        if any(re.search(p, line) for p in transcript.optional):
            continue
        out.append(line)
    return _sort_unordered(out, transcript.unordered)


def _sort_unordered(lines: list[str], patterns: Sequence[str]) -> list[str]:
    if not patterns:
        return lines
    out: list[str] = []
    run: list[str] = []
    for line in [*lines, None]:
        if line is not None and any(re.search(p, line) for p in patterns):
            run.append(line)
            continue
        out.extend(sorted(run))
        run = []
        if line is not None:
            out.append(line)
    return out


@dataclass(frozen=True)
class Block:
    """A marked fenced block of a guide: lines [start, end) are its text."""

    guide: Path
    name: str
    start: int
    end: int
    text: str


def blocks(guide: Path) -> list[Block]:
    """The transcript blocks of one markdown file, in order."""
    lines = guide.read_text().splitlines()
    found = []
    for number, line in enumerate(lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        fence = FENCE.match(lines[number + 1]) if number + 1 < len(lines) else None
        if fence is None:
            raise TranscriptError(
                f"{guide}:{number + 1}: a transcript marker must sit right above a ``` fence"
            )
        end = next(
            (i for i in range(number + 2, len(lines)) if lines[i].strip() == fence.group(1)),
            None,
        )
        if end is None:
            raise TranscriptError(f"{guide}:{number + 2}: the transcript's fence is never closed")
        text = "".join(f"{line}\n" for line in lines[number + 2 : end])
        found.append(Block(guide, marker.group(1), number + 2, end, text))
    return found


def all_blocks(root: Path = REPO) -> list[Block]:
    return [b for guide in GUIDES if (root / guide).is_file() for b in blocks(root / guide)]


def unmarked_transcripts(root: Path = REPO) -> list[str]:
    """Fenced blocks that start with `$ ` but carry neither marker: `guide:line` each."""
    out = []
    for guide in GUIDES:
        path = root / guide
        if not path.is_file():
            continue
        lines = path.read_text().splitlines()
        inside = False
        for number, line in enumerate(lines):
            if not FENCE.match(line):
                continue
            inside = not inside
            if not inside or number + 1 >= len(lines) or not lines[number + 1].startswith("$ "):
                continue
            above = lines[number - 1] if number else ""
            if not (MARKER.match(above) or RECORDED.match(above)):
                out.append(f"{guide}:{number + 1}")
    return out


def replace(block: Block, text: str) -> None:
    """Write `text` as the block's new content, in place."""
    lines = block.guide.read_text().splitlines(keepends=True)
    lines[block.start : block.end] = [text]
    # Whole or not at all: an interrupted `make docs` leaves the guide as it was.
    partial = block.guide.with_name(f".{block.guide.name}.partial")
    partial.write_text("".join(lines))
    partial.replace(block.guide)


def difference(block: Block, fresh: str) -> str:
    """A readable diff of the committed block against a fresh recording, both masked; or ''."""
    transcript = load(block.name)
    committed, now = masked(block.text, transcript), masked(fresh, transcript)
    if committed == now:
        return ""
    diff = difflib.unified_diff(
        committed,
        now,
        f"{_shown(block.guide)}:{block.start + 1} (committed, masked)",
        f"{block.name} now (masked)",
        lineterm="",
    )
    return "\n".join(diff)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def regenerate(names: Sequence[str] = (), root: Path = REPO) -> list[str]:
    """Record every marked block (or those named) and write it in place; the failures."""
    found = [b.name for b in all_blocks(root)]
    twice = sorted({name for name in found if found.count(name) > 1})
    if twice:
        raise TranscriptError(f"each transcript may appear once in the guides: {', '.join(twice)}")
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise TranscriptError(
            f"no block is marked {', '.join(unknown)}; marked: {', '.join(found)}"
        )
    failures = []
    for block_name in found:
        if names and block_name not in names:
            continue
        started = time.monotonic()
        try:
            fresh = record(block_name)
        except (TranscriptError, subprocess.TimeoutExpired, ModuleNotFoundError) as error:
            failures.append(f"{block_name}: {error}")
            print(f"FAILED   {block_name}: {error}", file=sys.stderr)
            continue
        # Blocks above it may have changed length: find it again before writing.
        (block,) = [b for b in all_blocks(root) if b.name == block_name]
        replace(block, fresh)
        print(f"recorded {block_name} in {time.monotonic() - started:.0f} s")
    return failures
