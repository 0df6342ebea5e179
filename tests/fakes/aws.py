"""Inject AWS answers that moto cannot give, through botocore's own event hooks on real clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def answer(client: Any, operation: str, parsed: dict[str, Any]) -> None:
    """Make `operation` return `parsed` without a request (moto does not serve it)."""

    def respond(**kwargs: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return AWSResponse("https://injected", 200, {}, None), parsed

    client.meta.events.register(f"before-call.{_service(client)}.{operation}", respond)


def fail(
    client: Any, operation: str, code: str, when: Callable[[dict[str, Any]], bool] = lambda p: True
) -> list[dict[str, Any]]:
    """Make `operation` raise ClientError(code) for calls whose params match; returns the calls."""
    calls: list[dict[str, Any]] = []

    def raise_error(params: dict[str, Any], **kwargs: Any) -> None:
        calls.append(params)
        if when(params):
            raise client_error(code, f"injected {code}", operation)

    client.meta.events.register(
        f"before-parameter-build.{_service(client)}.{operation}", raise_error
    )
    return calls


def _service(client: Any) -> str:
    return str(client.meta.service_model.service_id.hyphenize())
