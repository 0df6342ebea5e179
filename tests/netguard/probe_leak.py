"""Run by test_netguard.py in its own pytest session: these tests must FAIL under the guard.

Not collected by default (the file name does not start with test_).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# Outside the networks the calling test allows (127.0.0.1/32), yet still loopback: should the
# guard fail, nothing leaves this machine. Nothing listens there, so the attempt is refused.
ADDRESS = "127.0.0.2"
CONNECT = (
    "import socket\n"
    "try:\n"
    f"    socket.create_connection(({ADDRESS!r}, 80), timeout=1).close()\n"
    "except OSError as error:\n"
    "    print('connect failed:', error)\n"
)


def test_subprocess_reaches_beyond_loopback() -> None:
    # The child swallows the error, as a metadata or price lookup would: the log still tells.
    subprocess.run([sys.executable, "-c", CONNECT], check=True, timeout=60)


@pytest.mark.index
def test_index_marker_may_reach_the_network() -> None:
    subprocess.run([sys.executable, "-c", CONNECT], check=True, timeout=60)
