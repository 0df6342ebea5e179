"""A real HTTP server on 127.0.0.1 that speaks the IMDSv2 token protocol."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "AQAEAFakeToken=="


class ImdsServer:
    """Modes: 'ok'; 'no_token' (PUT answers empty); 'slow' (sleeps past any sane timeout);
    'v1_only' (refuses the token PUT with 403, as an IMDSv1-only endpoint would)."""

    def __init__(
        self, mode: str = "ok", instance_type: str = "g5.xlarge", region: str = "eu-west-1"
    ) -> None:
        self.mode = mode
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_PUT(self) -> None:
                server.requests.append(
                    ("PUT", self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                if server.mode == "slow":
                    time.sleep(2)
                if (
                    server.mode == "v1_only"
                    or self.path != "/latest/api/token"
                    or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                ):
                    self.send_response(403)
                    self.end_headers()
                    return
                body = b"" if server.mode == "no_token" else TOKEN.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                server.requests.append(
                    ("GET", self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    self.send_response(401)
                    self.end_headers()
                    return
                answers = {
                    "/latest/meta-data/instance-type": instance_type,
                    "/latest/meta-data/placement/region": region,
                }
                body = answers.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ImdsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
