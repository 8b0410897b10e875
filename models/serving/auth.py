"""Bearer-token auth for the service: tokens from a file or the environment, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

#: Environment variable holding bearer tokens (comma- or newline-separated).
TOKENS_ENV = "INCIDENT_RISK_TOKENS"


def load_tokens(file: Path | None = None, env: MutableMapping[str, str] | None = None) -> tuple[str, ...]:
    """Bearer tokens from ``$INCIDENT_RISK_TOKENS`` and/or a file (one per line; blank and # lines skipped)."""
    environ = os.environ if env is None else env
    raw = environ.get(TOKENS_ENV, "").replace(",", "\n").splitlines()
    if file is not None:
        raw += file.read_text(encoding="utf-8").splitlines()
    return tuple(t.strip() for t in raw if t.strip() and not t.strip().startswith("#"))


def _token_check(tokens: tuple[str, ...]) -> Callable[..., Awaitable[None]]:
    """A dependency accepting any of ``tokens`` as a bearer token, compared in constant time."""
    digests = [hashlib.sha256(t.encode()).digest() for t in tokens]
    bearer = HTTPBearer(auto_error=False, description="One of the service's tokens")

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = hashlib.sha256((credentials.credentials if credentials else "").encode()).digest()
        ok = False
        for digest in digests:  # no early exit: every token is compared
            ok |= hmac.compare_digest(given, digest)
        if credentials is None or not ok:
            raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check
