"""The Slack sender against a local fake Slack: retries (429 Retry-After, 5xx), timeouts, a Slack that is
down, a full queue and duplicates; the caller never waits and nothing is sent twice."""

from __future__ import annotations

import logging
import time

import pytest

from models.notify.blocks import header, section
from models.notify.config import SlackConfig
from models.notify.sender import BackgroundSender, Message, SendError, SlackSender
from tests.helpers.slack import TOKEN, closed_port_url, fake_slack


def _message(n: int = 1) -> Message:
    return Message("#squad-a", f"risk {n}", [header(f"risk {n}"), section(f"deploy *{n}*")])


def _bot(url: str, **kw: object) -> SlackSender:
    return SlackSender(SlackConfig(token=TOKEN, base_url=url, **kw))  # type: ignore[arg-type]


def test_bot_token_posts_with_chat_post_message() -> None:
    with fake_slack() as slack:
        _bot(slack.api_url).post(_message())
        (got,) = slack.messages
        assert got["channel"] == "#squad-a" and got["text"] == "risk 1" and got["blocks"][0]["type"] == "header"
        assert slack.problems == []


def test_webhook_posts_the_same_message_and_its_url_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with fake_slack([(500, {})] * 10) as down, pytest.raises(SendError) as err:
        SlackSender(SlackConfig(webhook_url=down.webhook_url, max_retries=1)).post(_message())
    assert "500" in str(err.value) and "/hook/" not in str(err.value)
    with fake_slack() as slack:
        SlackSender(SlackConfig(webhook_url=slack.webhook_url)).post(_message())
        assert [m["text"] for m in slack.messages] == ["risk 1"]
    assert "/hook/" not in caplog.text and TOKEN not in caplog.text


def test_429_waits_for_retry_after_then_delivers_once() -> None:
    with fake_slack([(429, {"Retry-After": "1"})]) as slack:
        started = time.monotonic()
        _bot(slack.api_url).post(_message())
        assert len(slack.messages) == 1 and slack.requests == 2
        assert slack.request_times[1] - slack.request_times[0] >= 1.0
        assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_and_delivered_once(status: int) -> None:
    with fake_slack([(status, {}), (status, {})]) as slack:
        _bot(slack.api_url).post(_message())
        assert len(slack.messages) == 1 and slack.requests == 3


def test_persistent_server_errors_give_up_with_a_reason_but_no_secret() -> None:
    with fake_slack([(500, {})] * 10) as slack:
        with pytest.raises(SendError) as err:
            _bot(slack.api_url, max_retries=2).post(_message())
        assert slack.requests == 3 and not slack.messages
        assert TOKEN not in str(err.value)


def test_timeout_is_not_retried_so_nothing_is_posted_twice() -> None:
    with fake_slack([("sleep", 2.5)]) as slack:
        with pytest.raises(SendError):
            _bot(slack.api_url, timeout_seconds=1).post(_message())
        time.sleep(2.0)  # the slow answer completes on the receiver's side
        assert slack.requests == 1 and len(slack.messages) == 1


def test_a_slack_that_is_down_fails_after_retrying_the_refused_connection() -> None:
    with pytest.raises(SendError, match="Connection refused|URLError"):
        _bot(closed_port_url() + "/api/", max_retries=1).post(_message())


def test_config_never_shows_the_secret() -> None:
    config = SlackConfig(token=TOKEN)
    assert TOKEN not in repr(config) and TOKEN not in str(config)
    assert "bot token" in repr(config)


def test_background_sender_never_blocks_drops_when_full_and_dedups(caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[str] = []
    with fake_slack([("sleep", 1.0)]) as slack:
        sender = BackgroundSender(_bot(slack.api_url, timeout_seconds=3), queue_size=2, on_outcome=outcomes.append)
        started = time.monotonic()
        accepted = [sender.submit(f"d{i}", _message(i)) for i in range(6)]
        assert sender.submit("d0", _message(0)) is False  # the same deploy again
        assert time.monotonic() - started < 0.2  # submit returns at once while Slack is slow
        assert sender.flush(15)
        sender.close()
    assert accepted.count(True) in (2, 3)  # the thread may have taken one off the queue already
    assert outcomes.count("dropped") == 6 - accepted.count(True)
    assert outcomes.count("duplicate") == 1
    assert outcomes.count("sent") == accepted.count(True) == len(slack.messages)
    assert len({m["text"] for m in slack.messages}) == len(slack.messages)
    assert TOKEN not in caplog.text


def test_background_sender_counts_failures_when_slack_is_down(caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[str] = []
    caplog.set_level(logging.WARNING, "incident_risk.notify")
    sender = BackgroundSender(_bot(closed_port_url() + "/api/", max_retries=0), on_outcome=outcomes.append)
    started = time.monotonic()
    assert sender.submit("d1", _message())
    assert time.monotonic() - started < 0.1
    assert sender.flush(10)
    sender.close()
    assert outcomes == ["queued", "failed"]
    assert "d1" in caplog.text and TOKEN not in caplog.text


def test_a_message_over_the_limits_is_refused_before_sending() -> None:
    bad = Message("#a", "x", [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}])
    with fake_slack() as slack:
        with pytest.raises(SendError, match="header text longer than 150"):
            _bot(slack.api_url).post(bad)
        assert slack.requests == 0
