"""The one seam to AWS: sessions and clients, retry policy, and AWS errors turned into advice.

boto3 honours AWS_ENDPOINT_URL, which is how tests point the real executable at moto's server.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from botocore.parsers import ResponseParserError

# EC2 instance states, named once for every module that filters or judges by them.
RUNNING = "running"
UP_STATES = ["pending", RUNNING]  # billing and booting or booted
LIVE_STATES = [*UP_STATES, "stopping", "stopped"]  # not ended: terminate and list see these
IN_USE_STATES = [*LIVE_STATES, "shutting-down"]  # may still hold a key pair or a group

# Everything botocore raises that is not a bug of ours; ResponseParserError is no BotoCoreError.
AWS_FAILURES = (ClientError, BotoCoreError, ResponseParserError)

# botocore's "standard" mode retries throttling and 5xx errors only, with jittered backoff.
RETRY_CONFIG = Config(retries={"mode": "standard", "max_attempts": 6}, connect_timeout=10)

# What to do about the AWS errors a dlcloud user meets; matched on the error code's prefix.
ADVICE: dict[str, str] = {
    "UnauthorizedOperation": "your IAM identity lacks this EC2 permission; ask for it or use "
    "another profile (AWS_PROFILE)",
    "AccessDenied": "your IAM identity lacks this permission; ask for it or use another profile",
    "VcpuLimitExceeded": "your vCPU quota for this instance family is too low; request an increase "
    "in Service Quotas (EC2) or pick a smaller type",
    "MaxSpotInstanceCountExceeded": "your spot quota is exhausted; request an increase or launch "
    "on-demand (drop --spot)",
    "InsufficientInstanceCapacity": "AWS has no capacity for this type in that zone right now; "
    "try another region, type, or later",
    "InvalidKeyPair.NotFound": "that key pair does not exist in this region; drop --key-name to "
    "let dlcloud create one",
    "InvalidAMIID": "that AMI does not exist in this region; drop --ami-id to use the newest DLAMI",
    "ExpiredToken": "your AWS credentials have expired; refresh them (aws sso login, or new keys)",
    "RequestExpired": "your AWS credentials have expired or the clock is wrong; refresh them",
    "AuthFailure": "AWS rejected your credentials; check AWS_PROFILE or `aws configure`",
    "InvalidClientTokenId": "AWS does not know these access keys; check AWS_PROFILE or "
    "`aws configure`",
    "SignatureDoesNotMatch": "the secret key does not match the access key; check `aws configure`",
    "OptInRequired": "this region is not enabled for your account; enable it or choose another",
    "Unsupported": "this instance type is not offered there; pick another zone, region or type",
}


class CloudError(Exception):
    """A failure the user can act on: printed as one or two lines, no traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def advice_for(code: str) -> str | None:
    for prefix, advice in ADVICE.items():
        if code.startswith(prefix):
            return advice
    return None


def explain(error: Exception, action: str) -> CloudError:
    """A CloudError saying what failed and what to do; credentials never appear in it."""
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return CloudError(
            f"{action}: no AWS credentials found; run `aws configure`, set AWS_PROFILE, or "
            "export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(error, NoRegionError):
        return CloudError(f"{action}: no AWS region; pass --region or set AWS_DEFAULT_REGION")
    if isinstance(error, EndpointConnectionError):
        return CloudError(f"{action}: cannot reach AWS ({error}); check the network or the region")
    if isinstance(error, ClientError):
        code = error_code(error)
        message = error.response.get("Error", {}).get("Message", "")
        advice = advice_for(code)
        line = f"{action} failed: {code}: {message}".rstrip(": ")
        return CloudError(f"{line}\n  what to do: {advice}" if advice else line)
    if isinstance(error, ResponseParserError):
        return CloudError(
            f"{action}: the endpoint's answer is not AWS's ({str(error).splitlines()[0][:160]})\n"
            "  what to do: check --region and AWS_ENDPOINT_URL, then try again"
        )
    return CloudError(
        f"{action} failed: {error}\n  what to do: check --region, the network and "
        "your credentials, then try again"
    )


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn AWS and botocore errors raised inside into CloudError."""
    try:
        yield
    except AWS_FAILURES as error:
        raise explain(error, action) from error


def known_regions() -> set[str]:
    """Every EC2 region of every partition, from botocore's bundled endpoint data (offline)."""
    session = botocore.session.get_session()
    return {
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("ec2", partition_name=partition)
    }


def check_region(region: str) -> str:
    """The region if botocore knows it, else a CloudError naming close ones; no call made."""
    known = known_regions()
    if region in known:
        return region
    close = difflib.get_close_matches(region, sorted(known), n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise CloudError(
        f"unknown AWS region {region!r}; {hint}pass --region with a region such as us-east-1 "
        "or eu-west-1 (for a region newer than this botocore: upgrade boto3)",
        2,
    )


class Aws:
    """Clients for one region, made once each with dlcloud's retry policy."""

    def __init__(self, region: str | None = None, profile: str | None = None) -> None:
        with aws_errors("opening the AWS session"):
            self.session = boto3.session.Session(region_name=region, profile_name=profile)
        if not self.session.region_name:
            raise CloudError("no AWS region; pass --region or set AWS_DEFAULT_REGION", 2)
        self.region: str = check_region(self.session.region_name)
        self._clients: dict[str, Any] = {}
        self._caller: str | None = None

    def caller(self) -> str:
        """The caller's identity (STS ARN): the owner tag dlcloud writes and matches on."""
        if self._caller is None:
            with aws_errors("checking your AWS credentials"):
                self._caller = str(self.client("sts").get_caller_identity()["Arn"])
        return self._caller

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, config=RETRY_CONFIG)
        return self._clients[service]
