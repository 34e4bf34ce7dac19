"""CORS: off by default; allow-listed origins only; preflights for the API."""

from __future__ import annotations

from typing import Any

import pytest

from support import KiB, Api

from .helpers import AUTH_ON, TokenApi

CS = 64 * KiB
GOOD = "https://app.example.com"
EVIL = "https://evil.example.net"
UID = "0" * 32


def cors_headers(resp: Any) -> dict[str, str]:
    return {k: v for k, v in resp.headers.get_all() if k.lower().startswith("access-control-")}


async def test_off_by_default(api: Api):
    for method in ("GET", "OPTIONS"):
        resp = await api.call(method, "/uploads", headers={"Origin": GOOD})
        assert cors_headers(resp) == {}
        assert "Vary" not in resp.headers


class TestAllowList:
    @pytest.fixture
    def config_overrides(self) -> dict[str, dict[str, Any]]:
        return {"auth": dict(AUTH_ON), "cors": {"allow_origins": [GOOD]}}

    @pytest.mark.parametrize("path, methods", [
        ("/upload/init", "POST"),
        (f"/upload/{UID}/chunk", "PUT"),
        (f"/upload/{UID}/status", "GET"),
        (f"/upload/{UID}/complete", "POST"),
        (f"/upload/{UID}", "DELETE"),
        ("/uploads", "GET"),
        (f"/files/{UID}", "GET, HEAD, PATCH, DELETE"),  # the download and tus (PATCH, DELETE)
    ])
    async def test_preflight_without_credentials(self, anonymous: TokenApi, path, methods):
        resp = await anonymous.call("OPTIONS", path, headers={
            "Origin": GOOD, "Access-Control-Request-Method": methods.split(",")[0],
            "Access-Control-Request-Headers": "authorization, content-md5"})
        assert resp.code == 204
        headers = cors_headers(resp)
        assert headers["Access-Control-Allow-Origin"] == GOOD
        assert headers["Access-Control-Allow-Methods"] == methods
        allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "content-md5"} <= allowed
        assert int(headers["Access-Control-Max-Age"]) == 600
        assert resp.headers["Vary"] == "Origin"

    async def test_actual_requests_expose_headers(self, alice: TokenApi, anonymous: TokenApi):
        resp = await alice.call("POST", "/upload/init", {"filename": "f", "size": 1},
                                headers={"Origin": GOOD})
        assert resp.code == 201
        headers = cors_headers(resp)
        assert headers["Access-Control-Allow-Origin"] == GOOD
        exposed = {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Retry-After", "Location", "Content-Range", "ETag"} <= exposed
        # Errors carry them too, so the page can read a 401 or a 429.
        resp = await anonymous.call("GET", "/uploads", headers={"Origin": GOOD})
        assert resp.code == 401
        assert cors_headers(resp)["Access-Control-Allow-Origin"] == GOOD

    async def test_other_origins_get_no_cors_headers(self, alice: TokenApi):
        for method in ("GET", "OPTIONS"):
            resp = await alice.call(method, "/uploads", headers={
                "Origin": EVIL, "Access-Control-Request-Method": "GET"})
            assert cors_headers(resp) == {}, method
        resp = await alice.call("GET", "/uploads", headers={"Origin": GOOD + ".evil.net"})
        assert cors_headers(resp) == {}

    async def test_the_page_gets_no_cors_headers(self, alice: TokenApi):
        resp = await alice.call("GET", "/", headers={"Origin": GOOD})
        assert cors_headers(resp) == {}
