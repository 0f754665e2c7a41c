"""Bearer-token auth: constant-time comparison, so response timing tells nothing about the key."""
from __future__ import annotations

import hmac

from .errors import ApiError


def check_bearer(authorization: str | None, api_key: str | None) -> None:
    """Raise 401 unless no key is configured or ``Authorization: Bearer <api_key>`` matches."""
    if api_key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(401, "incorrect or missing API key; send 'Authorization: Bearer <key>'", "invalid_api_key")
