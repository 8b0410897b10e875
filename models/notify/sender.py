"""Sending to Slack off the caller's path: a bounded queue, one background thread, slack_sdk retries.

``SlackSender.post`` sends one message now (used by the digest and by the background thread);
``BackgroundSender.submit`` never blocks: it puts a message (or a function building it) on a
bounded queue and returns, counting a drop when the queue is full. Each key is accepted once,
so a deploy scored twice is announced once. Retries are slack_sdk's retry handlers: 429 waits
for ``Retry-After``; 500/503 and a refused connection (nothing was received) are retried; a
timeout is not, because Slack may have received the message and a retry could post it twice.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.error import URLError

from slack_sdk.http_retry import RetryHandler
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from models.notify.blocks import check_message
from models.notify.config import SlackConfig

log = logging.getLogger("incident_risk.notify")


@dataclass(frozen=True)
class Message:
    """One Slack message: where, the fallback text (notifications, screen readers) and the blocks."""

    channel: str
    text: str
    blocks: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "text": self.text, "blocks": self.blocks}


class SendError(Exception):
    """Slack did not accept a message after the retries (the reason, never the secret)."""


class Poster(Protocol):
    def post(self, message: Message) -> None: ...


class RefusedConnectionRetryHandler(ConnectionErrorRetryHandler):
    """Retries only a refused connection: the request never reached Slack, so it cannot post twice."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        reason = error.reason if isinstance(error, URLError) else error
        return response is None and isinstance(reason, ConnectionRefusedError)


def retry_handlers(max_retries: int) -> list[RetryHandler]:
    return [
        RateLimitErrorRetryHandler(max_retry_count=max_retries),
        ServerErrorRetryHandler(max_retry_count=max_retries),
        RefusedConnectionRetryHandler(max_retry_count=max_retries),
    ]


class SlackSender:
    """Posts with the official client: ``chat.postMessage`` (bot token) or an incoming webhook."""

    def __init__(self, config: SlackConfig) -> None:
        if not config.enabled:
            raise SendError("Slack is not configured: set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL")
        self.config = config
        handlers = retry_handlers(config.max_retries)
        # slack_sdk logs each request (the webhook client with its URL, a secret) at DEBUG: its
        # logger here never goes below INFO, whatever the application's logging level.
        quiet = logging.getLogger("incident_risk.notify.slack_sdk")
        quiet.setLevel(logging.INFO)
        self._web: Any = None
        self._hook: Any = None
        if config.token:
            from slack_sdk import WebClient

            base = config.base_url if config.base_url.endswith("/") else config.base_url + "/"
            self._web = WebClient(
                token=config.token,
                base_url=base,
                timeout=int(max(1, config.timeout_seconds)),
                retry_handlers=handlers,
                logger=quiet,
            )
        else:
            from slack_sdk.webhook import WebhookClient

            self._hook = WebhookClient(
                url=str(config.webhook_url),
                timeout=int(max(1, config.timeout_seconds)),
                retry_handlers=handlers,
                logger=quiet,
            )

    def post(self, message: Message) -> None:
        problems = check_message(message.as_dict())
        if problems:
            raise SendError(f"message to {message.channel} breaks Block Kit limits: {problems[0]}")
        try:
            if self._web is not None:
                self._web.chat_postMessage(channel=message.channel, text=message.text, blocks=message.blocks)
                return
            response = self._hook.send(text=message.text, blocks=message.blocks)
        except Exception as exc:  # SlackApiError, URLError, timeouts: the reason only, never the request
            raise SendError(f"{type(exc).__name__}: {_reason(exc)}") from None
        if response.status_code != 200:
            raise SendError(f"webhook answered {response.status_code}: {str(response.body)[:200]}")


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "get"):
        return str(response.get("error") or response.status_code)
    return str(getattr(exc, "reason", exc))[:200]


Outcome = str  # queued, sent, failed, dropped, duplicate
Job = Message | Callable[[], Message | None]


class BackgroundSender:
    """A bounded queue drained by one daemon thread; ``submit`` returns at once, whatever Slack does."""

    def __init__(
        self,
        poster: Poster,
        *,
        queue_size: int = 1000,
        remember: int = 100_000,
        on_outcome: Callable[[Outcome], None] = lambda _: None,
    ) -> None:
        self.poster = poster
        self.on_outcome = on_outcome
        self._queue: queue.Queue[tuple[str, Job] | None] = queue.Queue(maxsize=queue_size)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="incident-risk-slack", daemon=True)
        self._thread.start()

    def submit(self, key: str, job: Job) -> bool:
        """Queue ``job`` once per ``key``; False when it is a duplicate or the queue is full (dropped)."""
        with self._lock:
            if key in self._seen:
                self.on_outcome("duplicate")
                return False
            try:
                self._queue.put_nowait((key, job))
            except queue.Full:
                self.on_outcome("dropped")
                return False
            self._seen[key] = None
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        self.on_outcome("queued")
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                key, job = item
                message = job() if callable(job) else job
                if message is None:
                    continue
                self.poster.post(message)
                self.on_outcome("sent")
            except Exception as exc:
                self.on_outcome("failed")
                log.warning("slack message %s not sent: %s", item[0] if item else "?", exc)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is handled; False on timeout (for tests and shutdown)."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
