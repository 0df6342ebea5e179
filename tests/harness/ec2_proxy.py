"""A loopback HTTP proxy in front of moto's server that holds, delays, staggers or answers late.

Rules match on the query body's `Action=` (EC2 speaks the query protocol), so a test can hold
RunInstances until it releases it, answer DescribeInstances 8 s late, or space two launches
0.85 s apart. It also keeps the one promise of AWS that moto does not: a RunInstances repeated
with the same ClientToken starts nothing new (same parameters: the first answer again; other
parameters: IdempotentParameterMismatch), as EC2 documents for idempotent requests.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Query = dict[str, list[str]]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
MISMATCH = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
    "<Code>IdempotentParameterMismatch</Code><Message>the client token {token} was already used "
    "with other parameters</Message></Error></Errors><RequestID>proxy</RequestID></Response>"
)


@dataclass
class Hold:
    """Requests of one action kept waiting (before or after moto did them) until released.

    `arrived` is set once one is held: on arrival, or (after=True) once moto has answered it.
    """

    action: str
    after: bool
    count: int
    where: Callable[[Query], bool]
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    held: int = 0

    def release(self) -> None:
        self.released.set()


@dataclass
class Rule:
    """Delay before forwarding, answer late, or stagger successive calls (the n-th waits n*s)."""

    delay_s: float = 0.0
    late_s: float = 0.0
    stagger_s: float = 0.0
    calls: int = 0


class Ec2Proxy:
    """Start with `with Ec2Proxy(upstream) as proxy:`; point AWS_ENDPOINT_URL at proxy.url."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.lock = threading.Lock()
        self.rules: dict[str, Rule] = {}
        self.holds: list[Hold] = []
        self.seen: dict[str, int] = {}
        self.arrivals = threading.Condition(self.lock)
        self.tokens: dict[str, tuple[dict[str, list[str]], int, list[tuple[str, str]], bytes]] = {}
        self.token_locks: dict[str, threading.Lock] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> Ec2Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for hold in self.holds:
            hold.release()
        self.server.shutdown()
        self.server.server_close()

    # -- what a test asks for ------------------------------------------------------------

    def hold(
        self,
        action: str,
        *,
        after: bool = False,
        count: int = 1,
        where: Callable[[Query], bool] = lambda query: True,
    ) -> Hold:
        """Keep the next `count` calls of `action` waiting until `.release()`.

        after=False: moto has not seen the request yet; after=True: moto has done it (an
        instance exists) but the caller has no answer yet, as when a reply is lost in flight.
        `where` picks calls by their parameters (the parsed query: name -> values).
        """
        hold = Hold(action, after, count, where)
        with self.lock:
            self.holds.append(hold)
        return hold

    def delay(self, action: str, seconds: float) -> None:
        self._rule(action).delay_s = seconds

    def answer_late(self, action: str, seconds: float) -> None:
        self._rule(action).late_s = seconds

    def stagger(self, action: str, seconds: float) -> None:
        """The first call goes at once, the second after `seconds`, the third after 2x, ..."""
        rule = self._rule(action)
        rule.stagger_s, rule.calls = seconds, 0

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            for hold in self.holds:
                hold.release()
            self.holds.clear()

    def calls(self, action: str) -> int:
        with self.lock:
            return self.seen.get(action, 0)

    def wait_for(self, action: str, count: int = 1, timeout: float = 60) -> None:
        """Until `count` calls of `action` have arrived (in total since start)."""
        with self.arrivals:
            if not self.arrivals.wait_for(lambda: self.seen.get(action, 0) >= count, timeout):
                raise TimeoutError(f"{action} was called {self.seen.get(action, 0)} times")

    def _rule(self, action: str) -> Rule:
        with self.lock:
            return self.rules.setdefault(action, Rule())

    # -- the proxy -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                proxy._serve(self, "POST")

            def do_GET(self) -> None:
                proxy._serve(self, "GET")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        query = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
        action = (query.get("Action") or [""])[0]
        before, after_holds, rule_delay, late = self._arrive(action, query)
        for hold in before:
            hold.released.wait()
        if rule_delay:
            time.sleep(rule_delay)
        token = (query.get("ClientToken") or [""])[0] if action == "RunInstances" else ""
        with self._token_turn(token):
            status, headers, answer = self._replay(token, query) or self._forward(
                handler, method, body
            )
            if token and token not in self.tokens:
                self.tokens[token] = (_without_token(query), status, headers, answer)
        for hold in after_holds:
            hold.arrived.set()  # moto has done it: what the caller cannot know yet
            hold.released.wait()
        if late:
            time.sleep(late)
        try:
            handler.send_response(status)
            for key, value in headers:
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(answer)))
            handler.end_headers()
            handler.wfile.write(answer)
        except OSError:
            pass  # the caller gave up (interrupted): what moto did stays done, as on AWS

    def _arrive(self, action: str, query: Query) -> tuple[list[Hold], list[Hold], float, float]:
        with self.arrivals:
            self.seen[action] = self.seen.get(action, 0) + 1
            before: list[Hold] = []
            after: list[Hold] = []
            for hold in self.holds:
                if hold.action == action and hold.held < hold.count and hold.where(query):
                    hold.held += 1
                    (after if hold.after else before).append(hold)
                    if not hold.after:
                        hold.arrived.set()
            rule = self.rules.get(action)
            delay = late = 0.0
            if rule is not None:
                delay = rule.delay_s + rule.stagger_s * rule.calls
                rule.calls += 1
                late = rule.late_s
            self.arrivals.notify_all()
        return before, after, delay, late

    @contextmanager
    def _token_turn(self, token: str) -> Iterator[None]:
        """Calls with one client token take turns, so the second sees what the first did."""
        if not token:
            yield
            return
        with self.lock:
            turn = self.token_locks.setdefault(token, threading.Lock())
        with turn:
            yield

    def _replay(
        self, token: str, query: dict[str, list[str]]
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        if not token or token not in self.tokens:
            return None
        first, status, headers, answer = self.tokens[token]
        if first == _without_token(query):
            return status, headers, answer
        return 400, [("Content-Type", "text/xml")], MISMATCH.format(token=token).encode()

    def _forward(
        self, handler: BaseHTTPRequestHandler, method: str, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
            connection.request(method, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, kept, answer
        finally:
            connection.close()


def _without_token(query: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: v for k, v in query.items() if k != "ClientToken"}
