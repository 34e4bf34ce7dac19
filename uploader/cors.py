"""CORS for the JSON API: off unless ``cors.allow_origins`` lists origins.

Browsers on another origin send a preflight ``OPTIONS`` before a chunk PUT
(it carries ``Authorization`` and ``Content-MD5``); an origin not on the list
gets no CORS header at all, so the browser refuses the call. Tokens travel in
``Authorization``, never in cookies, so credentials mode is not needed.
"""

from __future__ import annotations

from .config import CorsConfig

ALLOW_HEADERS = "Authorization, Content-Type, Content-MD5, Range"
EXPOSE_HEADERS = "Retry-After, Location, Content-Range, Content-Length, ETag, WWW-Authenticate"


def allowed(config: CorsConfig, origin: str | None) -> bool:
    if not origin or not config.allow_origins:
        return False
    return "*" in config.allow_origins or origin in config.allow_origins


def cors_headers(config: CorsConfig, origin: str | None, *, preflight: bool,
                 methods: list[str], allow_headers: str = ALLOW_HEADERS,
                 expose_headers: str = EXPOSE_HEADERS) -> dict[str, str]:
    """Headers to add to the answer for a request from ``origin``."""
    if not config.allow_origins:
        return {}
    # Answers differ by Origin once CORS is on: caches must key on it.
    headers = {"Vary": "Origin"}
    if not allowed(config, origin):
        return headers
    assert origin is not None
    headers["Access-Control-Allow-Origin"] = origin
    if preflight:
        headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        headers["Access-Control-Allow-Headers"] = allow_headers
        headers["Access-Control-Max-Age"] = str(config.max_age)
    else:
        headers["Access-Control-Expose-Headers"] = expose_headers
    return headers
