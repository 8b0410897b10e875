"""Block Kit messages: small builders that always stay within Slack's documented limits, and a checker.

Limits (https://api.slack.com/reference/block-kit/blocks): at most 50 blocks per message; a
section's text at most 3000 characters; a header's plain text at most 150; context elements at
most 10; a button's text 75 and its URL 3000. Builders truncate rather than let Slack refuse the
message; ``check_message`` names every violation (used before sending and by the test receiver).
"""

from __future__ import annotations

import re
from typing import Any

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_BUTTON_TEXT = 75
MAX_URL = 3000
MAX_FALLBACK_TEXT = 4000
#: mrkdwn links: ``<url|label>``; the URL must be http(s) or mailto and hold no spaces or ``|<>``.
_LINK = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
_URL = re.compile(r"^(https?://[^\s|<>]+|mailto:[^\s|<>]+)$")
_SPECIAL = re.compile(r"^[@#!]")  # <@U123>, <#C123>, <!here> are mentions, not links

Block = dict[str, Any]


def escape(text: object) -> str:
    """Text safe inside mrkdwn: ``&``, ``<`` and ``>`` escaped as Slack asks."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def link(url: str | None, label: object) -> str:
    """A mrkdwn link, or the plain label when the URL is missing or not a valid link target."""
    text = escape(label).replace("|", "¦")
    if not url or not _URL.match(url) or len(url) > MAX_URL:
        return text
    return f"<{url}|{text}>"


def header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": _cut(text, MAX_HEADER_TEXT), "emoji": True}}


def section(text: str, fields: list[str] | None = None) -> Block:
    """A mrkdwn section; over-long text is cut at a line break so no link is split."""
    block: Block = {"type": "section", "text": {"type": "mrkdwn", "text": _cut_lines(text, MAX_SECTION_TEXT)}}
    if fields:
        block["fields"] = [{"type": "mrkdwn", "text": _cut_lines(f, 2000)} for f in fields[:10]]
    return block


def _cut_lines(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    kept: list[str] = []
    size = 0
    for line in text.split("\n"):
        if size + len(line) + 1 > limit - 2:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept) + "\n…" if kept else _cut(_LINK.sub(lambda m: m.group(2) or "", text), limit)


def context(*texts: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(t, 2000)} for t in texts[:10]]}


def divider() -> Block:
    return {"type": "divider"}


def buttons(links: list[tuple[str, str | None]]) -> Block | None:
    """An actions block of link buttons (those with a valid URL), or None when there is none."""
    elements = [
        {"type": "button", "text": {"type": "plain_text", "text": _cut(label, MAX_BUTTON_TEXT)}, "url": url}
        for label, url in links
        if url and _URL.match(url) and len(url) <= MAX_URL
    ]
    return {"type": "actions", "elements": elements[:25]} if elements else None


def limit_blocks(blocks: list[Block], note: str = "more left out to fit Slack's 50-block limit") -> list[Block]:
    """At most 50 blocks: the tail is replaced by a context line saying so."""
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    return [*blocks[: MAX_BLOCKS - 1], context(f"_{note}_")]


def check_message(message: dict[str, Any]) -> list[str]:
    """Every way ``message`` (``text`` + ``blocks``) breaks Block Kit's limits; empty when it is fine."""
    problems: list[str] = []
    blocks = message.get("blocks") or []
    if not isinstance(blocks, list):
        return ["blocks: not a list"]
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"blocks: {len(blocks)} blocks, at most {MAX_BLOCKS}")
    if not isinstance(message.get("text"), str) or not message["text"].strip():
        problems.append("text: a fallback text is required")
    elif len(message["text"]) > MAX_FALLBACK_TEXT:
        problems.append(f"text: {len(message['text'])} characters, at most {MAX_FALLBACK_TEXT}")
    for i, block in enumerate(blocks):
        kind = block.get("type")
        where = f"blocks[{i}] ({kind})"
        if kind == "header":
            text = block.get("text", {})
            if text.get("type") != "plain_text":
                problems.append(f"{where}: header text must be plain_text")
            if len(text.get("text", "")) > MAX_HEADER_TEXT:
                problems.append(f"{where}: header text longer than {MAX_HEADER_TEXT}")
        elif kind == "section":
            texts = [block.get("text", {}), *block.get("fields", [])]
            if len(texts[0].get("text", "")) > MAX_SECTION_TEXT:
                problems.append(f"{where}: section text longer than {MAX_SECTION_TEXT}")
            if len(block.get("fields", [])) > 10:
                problems.append(f"{where}: more than 10 fields")
            for t in texts:
                problems.extend(f"{where}: {p}" for p in _check_mrkdwn(t))
        elif kind == "context":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
                problems.append(f"{where}: 1 to {MAX_CONTEXT_ELEMENTS} elements")
            for t in elements:
                problems.extend(f"{where}: {p}" for p in _check_mrkdwn(t))
        elif kind == "actions":
            for el in block.get("elements", []):
                if len(el.get("text", {}).get("text", "")) > MAX_BUTTON_TEXT:
                    problems.append(f"{where}: button text longer than {MAX_BUTTON_TEXT}")
                url = el.get("url")
                if url is not None and (not _URL.match(url) or len(url) > MAX_URL):
                    problems.append(f"{where}: invalid button url {url!r}")
        elif kind not in ("divider", "image"):
            problems.append(f"{where}: unexpected block type")
    return problems


def _check_mrkdwn(text_object: dict[str, Any]) -> list[str]:
    if text_object.get("type") != "mrkdwn":
        return []
    text = text_object.get("text", "")
    problems = []
    for match in _LINK.finditer(text):
        target = match.group(1)
        if _SPECIAL.match(target):
            continue
        if not _URL.match(target):
            problems.append(f"invalid mrkdwn link target {target!r}")
    stray = _LINK.sub("", text)
    if "<" in stray or ">" in stray:
        problems.append("unescaped '<' or '>' outside a link")
    return problems
