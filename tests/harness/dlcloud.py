"""dlcloud against moto's HTTP server: the server, its clients, the dlcloud runs and their output.

The moto-server tests (marker motoserver) share these: the `moto_env` fixture, the installed
dlcloud run as a user's shell runs it, and a process that holds one of dlcloud's lock files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import boto3
import pytest

from cloud import guard
from tests.conftest import REPO, free_port
from tests.fakes.aws import FAKE_CREDENTIALS
from tests.harness.runs import run_captured

CIDR = "203.0.113.7/32"
COLLEAGUE = "arn:aws:iam::123456789012:user/colleague"  # another user of the same account
# Takes the lock file named by argv[1], says so, and keeps it until its stdin closes.
HOLD = (
    "import fcntl, sys\n"
    "handle = open(sys.argv[1], 'a')\n"
    "fcntl.flock(handle, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@contextmanager
def moto_server(tmp: Path) -> Iterator[dict[str, str]]:
    """moto's server on a free loopback port, empty, and an environment pointing dlcloud at it."""
    # Imported here: without moto's server the tests skip (marker motoserver), not break collection.
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto's backends are process-global: start from an empty account.
    urllib.request.urlopen(
        urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")
    ).close()
    env = {
        **os.environ,
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
        "DLCLOUD_KEY_DIR": str(tmp / "keys"),
        "DLCLOUD_INVENTORY": str(tmp / "dlcloud.yml"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_DEPRECATION_WARNINGS": "false",
    }
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture
def moto_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """moto's server for one test, and an environment that points dlcloud at it."""
    with moto_server(tmp_path) as env:
        yield env


def aws_client(env: dict[str, str], service: str, region: str = "us-east-1") -> Any:
    """A boto3 client of moto's server (the env's endpoint), with moto's test credentials."""
    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def ec2(env: dict[str, str], region: str = "us-east-1") -> Any:
    return aws_client(env, "ec2", region)


def caller(env: dict[str, str]) -> str:
    """The ARN moto's STS gives the test credentials: the owner dlcloud tags with."""
    return str(aws_client(env, "sts").get_caller_identity()["Arn"])


def image_of(client: Any) -> str:
    return str(client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def launch_args(image: str, name: str, *extra: str, instance_type: str = "g5.xlarge") -> list[str]:
    """`dlcloud launch` of this image under this name from CIDR, without asking."""
    return [
        "launch",
        "--instance-type",
        instance_type,
        "--name",
        name,
        "--ami-id",
        image,
        "--ssh-cidr",
        CIDR,
        "--yes",
        *extra,
    ]


def live(client: Any, **filters: str) -> list[dict[str, Any]]:
    """Pending or running instances, with these tags (Name="lab": tag Name is lab)."""
    wanted = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    wanted += [{"Name": f"tag:{key}", "Values": [value]} for key, value in filters.items()]
    reservations = client.describe_instances(Filters=wanted)["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def dlcloud_tags(owner: str, name: str) -> list[dict[str, str]]:
    """The tags dlcloud gives an instance it launches for `owner` under `name`."""
    return guard.tag_list(
        {
            guard.TAG_PROJECT: guard.PROJECT,
            guard.TAG_CREATED_BY: guard.CREATED_BY,
            guard.TAG_OWNER: owner,
            guard.TAG_NAME: name,
        }
    )


def run_tagged(
    client: Any, image: str, tags: list[dict[str, str]], instance_type: str = "t3.micro"
) -> str:
    """An instance started by hand (not by dlcloud) with these tags: its id."""
    return str(
        client.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            InstanceType=instance_type,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]
    )


def dlcloud_argv() -> list[str]:
    return [shutil.which("dlcloud", path=str(Path(sys.executable).parent)) or "dlcloud"]


def dlcloud(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """dlcloud in us-east-1, run to its end."""
    return dlcloud_raw(env, "--region", "us-east-1", *args, timeout=timeout)


def dlcloud_raw(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """dlcloud exactly as typed: no --region added."""
    return run_captured([*dlcloud_argv(), *args], env=env, timeout=timeout)


def start_dlcloud(
    env: dict[str, str], *args: str, merge_stderr: bool = False
) -> subprocess.Popen[str]:
    """dlcloud in us-east-1, running on; merge_stderr: one stream, in the order it was written."""
    return subprocess.Popen(
        [*dlcloud_argv(), "--region", "us-east-1", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
    )


def read_until(stream: IO[str] | None, wanted: str) -> list[str]:
    """Lines of a running process up to the first containing `wanted` (EOF: all of them)."""
    assert stream is not None
    seen = []
    for line in stream:
        seen.append(line)
        if wanted in line:
            break
    return seen


def wait_for_line(stream: IO[str] | None, wanted: str, timeout: float = 90) -> list[str]:
    """Lines up to the first containing `wanted`; fails after `timeout` s with what was read."""
    assert stream is not None
    seen: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in stream:
            seen.append(line)
            if wanted in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(timeout), f"no line with {wanted!r} in: {''.join(seen)!r}"
    return seen


@contextmanager
def lock_holders() -> Iterator[Any]:
    """take(path): another process takes that lock file and keeps it until the block ends."""
    holders: list[subprocess.Popen[str]] = []

    def take(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"

    try:
        yield take
    finally:
        for holder in holders:
            holder.communicate(timeout=30)  # closing its stdin ends it
