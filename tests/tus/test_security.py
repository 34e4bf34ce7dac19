"""tus under the same security rules as our API: owners, tokens, CORS."""

from __future__ import annotations

from typing import Any

import pytest

from support import Api
from uploader.auth import hash_token

TOKENS = {"alice": "alice-token-1234", "bob": "bob-token-5678"}
ORIGIN = "https://app.example.com"


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    return {"auth": {"enabled": True,
                     "tokens": {o: hash_token(t) for o, t in TOKENS.items()}},
            "cors": {"allow_origins": [ORIGIN]}}


def as_(owner: str, **headers: str) -> dict[str, str]:
    return {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {TOKENS[owner]}", **headers}


async def test_owners_and_tokens(api: Api) -> None:
    resp = await api.call("POST", "/files/", raw=b"", headers={"Tus-Resumable": "1.0.0",
                                                               "Upload-Length": "3"})
    assert resp.code == 401
    resp = await api.call("POST", "/files/", raw=b"", headers=as_("alice", **{
        "Upload-Length": "3", "Upload-Concat": "partial"}))
    assert resp.code == 201
    path = "/files/" + resp.headers["Location"].rsplit("/", 1)[1]
    for method, body in (("HEAD", None), ("PATCH", b"abc"), ("DELETE", None)):
        resp = await api.call(method, path, raw=body, headers=as_("bob", **{
            "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}))
        assert resp.code == 404, method  # never 403: existence is not leaked
    resp = await api.call("PATCH", path, raw=b"abc", headers=as_("alice", **{
        "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}))
    assert resp.code == 204
    # Bob cannot concatenate Alice's partial either.
    resp = await api.call("POST", "/files/", raw=b"", headers=as_("bob", **{
        "Upload-Concat": f"final;{path}"}))
    assert resp.code == 404


async def test_cors_for_tus(api: Api) -> None:
    resp = await api.call("OPTIONS", "/files/", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "tus-resumable,upload-length,upload-metadata"})
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed >= {"tus-resumable", "upload-length", "upload-metadata", "upload-offset",
                       "upload-checksum", "upload-concat", "upload-defer-length",
                       "upload-complete", "upload-draft-interop-version", "authorization",
                       "content-type", "x-http-method-override"}
    assert resp.headers["Access-Control-Allow-Methods"] == "POST"
    resp = await api.call("OPTIONS", "/files/" + "a" * 32, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "PATCH"})
    assert set(resp.headers["Access-Control-Allow-Methods"].split(", ")) == {
        "GET", "HEAD", "PATCH", "DELETE"}
    resp = await api.call("POST", "/files/", raw=b"", headers=as_("alice", **{
        "Origin": ORIGIN, "Upload-Length": "3"}))
    assert resp.code == 201
    exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed >= {"location", "upload-offset", "upload-length", "tus-resumable",
                       "upload-expires", "upload-complete"}
    resp = await api.call("POST", "/files/", raw=b"", headers=as_("alice", **{
        "Origin": "https://evil.example", "Upload-Length": "3"}))
    assert "Access-Control-Allow-Origin" not in resp.headers
