"""EC2 instance metadata (IMDSv2): which instance type and region this machine is, if any.

Short timeouts throughout: off EC2 the address does not answer, and nobody should wait for it.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass

IMDS_URL_ENV = "DLSTATION_IMDS_URL"
DEFAULT_URL = "http://169.254.169.254"
TOKEN_TTL_S = "60"
TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Placement:
    instance_type: str
    region: str


def base_url() -> str:
    return os.environ.get(IMDS_URL_ENV, DEFAULT_URL).rstrip("/")


def _request(url: str, method: str, headers: dict[str, str], timeout: float) -> str:
    request = urllib.request.Request(url, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return str(response.read().decode().strip())


def lookup(url: str | None = None, timeout: float = TIMEOUT_S) -> Placement | str:
    """The placement, or the reason there is none (not on EC2, no token, timeout)."""
    root = url or base_url()
    try:
        token = _request(
            f"{root}/latest/api/token",
            "PUT",
            {"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL_S},
            timeout,
        )
    except (urllib.error.URLError, OSError, ValueError) as error:
        return f"no EC2 instance metadata at {root} ({error}); not on EC2?"
    if not token:
        return "EC2 instance metadata gave no IMDSv2 token"
    headers = {"X-aws-ec2-metadata-token": token}
    try:
        instance_type = _request(f"{root}/latest/meta-data/instance-type", "GET", headers, timeout)
        region = _request(f"{root}/latest/meta-data/placement/region", "GET", headers, timeout)
    except (urllib.error.URLError, OSError, ValueError) as error:
        return f"EC2 instance metadata refused the lookup ({error})"
    return Placement(instance_type, region)
