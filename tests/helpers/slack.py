"""A local stand-in for Slack (loopback HTTP): chat.postMessage and an incoming webhook.

It records every message it accepts, checks each against Block Kit's documented limits
(``models.notify.blocks.check_message``) and answers from a script, one entry per request:
``"ok"``, ``(status, headers)`` (e.g. ``(429, {"Retry-After": "1"})``) or ``("sleep", seconds)``
(answers ok after that delay, so a client with a shorter timeout gives up).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from models.notify.blocks import check_message

TOKEN = "xoxb-test-not-a-secret"


@dataclass
class FakeSlack:
    url: str
    script: list[Any] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)  # accepted (answered 200 in time)
    problems: list[str] = field(default_factory=list)
    requests: int = 0
    request_times: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/hook/T000/B000/abc"

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return True
            time.sleep(0.02)
        return False


def _handler(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
            with fake.lock:
                fake.requests += 1
                fake.request_times.append(time.monotonic())
                action = fake.script.pop(0) if fake.script else "ok"
            if isinstance(action, tuple) and action[0] == "sleep":
                time.sleep(float(action[1]))
                action = "ok"
            if isinstance(action, tuple):
                status, headers = action
                self._answer(int(status), {"ok": False, "error": "scripted"}, headers)
                return
            message = self._message(body)
            if self.path.startswith("/api/") and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._answer(200, {"ok": False, "error": "invalid_auth"})
                return
            problems = check_message(message)
            with fake.lock:
                fake.messages.append(message)
                fake.problems.extend(problems)
            if self.path.startswith("/hook/"):
                self._answer(200, None, text="ok")
            else:
                self._answer(200, {"ok": True, "channel": message.get("channel"), "ts": "1.2"})

        def _message(self, body: bytes) -> dict[str, Any]:
            if "json" in (self.headers.get("Content-Type") or ""):
                return dict(json.loads(body or b"{}"))
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if isinstance(form.get("blocks"), str):
                form["blocks"] = json.loads(form["blocks"])
            return form

        def _answer(
            self, status: int, payload: Any, headers: dict[str, str] | None = None, text: str | None = None
        ) -> None:
            data = text.encode() if text is not None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if text is not None else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            with suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

    return Handler


@contextmanager
def fake_slack(script: list[Any] | None = None) -> Iterator[FakeSlack]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(FakeSlack("")))
    fake = FakeSlack(f"http://127.0.0.1:{server.server_address[1]}", list(script or []))
    server.RequestHandlerClass = _handler(fake)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A loopback URL nobody listens on: a Slack that is down (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
