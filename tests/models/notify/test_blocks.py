"""Block Kit limits: the checker the fake Slack uses catches each documented violation, and the builders
never produce one, whatever text they are given."""

from __future__ import annotations

import pytest
from slack_sdk.models.blocks import Block

from models.notify import blocks as bk


def _msg(*blocks: dict) -> dict:
    return {"text": "fallback", "blocks": list(blocks)}


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (_msg(*[bk.divider()] * 51), "51 blocks, at most 50"),
        (_msg({"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}), "header text longer than 150"),
        (_msg({"type": "header", "text": {"type": "mrkdwn", "text": "h"}}), "header text must be plain_text"),
        (_msg({"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}), "section text longer than 3000"),
        (_msg(bk.section("see <ftp://x|here>")), "invalid mrkdwn link target 'ftp://x'"),
        (_msg(bk.section("see <https://a b|here>")), "invalid mrkdwn link target"),
        (_msg(bk.section("a < b")), "unescaped '<' or '>'"),
        (_msg({"type": "context", "elements": []}), "1 to 10 elements"),
        ({"blocks": [bk.divider()]}, "fallback text is required"),
        (
            _msg(
                {
                    "type": "actions",
                    "elements": [
                        {"type": "button", "text": {"type": "plain_text", "text": "x"}, "url": "javascript:alert(1)"}
                    ],
                }
            ),
            "invalid button url",
        ),  # fmt: skip
    ],
)
def test_checker_names_each_violation(message: dict, problem: str) -> None:
    problems = bk.check_message(message)
    assert any(problem in p for p in problems), problems


def test_mentions_and_valid_links_pass() -> None:
    ok = _msg(bk.section("<@U123> <#C123> <!here> <https://example.com/a?b=1|a link> <mailto:a@b.c|mail> &lt;x&gt;"))
    assert bk.check_message(ok) == []


def test_builders_cut_and_escape_whatever_they_are_given() -> None:
    long_link = bk.link("https://example.com/" + "x" * 100, "label|with<pipes>&")
    blocks = [
        bk.header("h" * 400),
        bk.section("\n".join([long_link] * 200), fields=["f" * 5000] * 12),
        bk.section(bk.escape("<b>" * 2000)),
        bk.context(*["c" * 3000] * 12),
        bk.buttons([("b" * 100, "https://example.com"), ("bad", "javascript:x"), ("none", None)]) or bk.divider(),
        *[bk.divider()] * 60,
    ]
    message = {"text": "t", "blocks": bk.limit_blocks(blocks)}
    assert bk.check_message(message) == []
    assert len(message["blocks"]) == bk.MAX_BLOCKS and message["blocks"][-1]["type"] == "context"
    for block in message["blocks"]:
        Block.parse(block).to_dict()  # slack_sdk's own validators accept it
    assert bk.link("javascript:alert(1)", "x") == "x" and bk.link(None, "a<b") == "a&lt;b"
