"""Bearer tokens and owners: 401 without a valid token on every API route,
404 (never 403) for another owner's upload on every endpoint."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from support import KiB, md5, run_uploader
from uploader.config import ConfigError, load_config
from uploader.config import anonymous_remote_message

from .helpers import AUTH_ON, TokenApi, raw_request

CS = 64 * KiB
OTHER_ID = "0" * 32


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    return {"auth": dict(AUTH_ON)}


async def completed_upload(api: TokenApi, data: bytes) -> str:
    up = await api.init(len(data), CS)
    code, doc = await api.put_chunk(up["upload_id"], 0, data)
    assert code == 200, doc
    code, doc = await api.complete(up["upload_id"], md5(data))
    assert code == 200, doc
    return up["upload_id"]


def endpoints(uid: str) -> list[tuple[str, str, bytes | None]]:
    """Every API call with a request that would succeed for the owner."""
    return [
        ("POST", "/upload/init", b'{"filename":"x","size":1,"chunk_size":65536}'),
        ("GET", f"/upload/{uid}/status", None),
        ("PUT", f"/upload/{uid}/chunk?index=0", b"x"),
        ("POST", f"/upload/{uid}/complete", b""),
        ("DELETE", f"/upload/{uid}", None),
        ("GET", "/uploads", None),
        ("GET", f"/files/{uid}", None),
        ("HEAD", f"/files/{uid}", None),
        ("GET", f"/upload/{uid}/link", None),
    ]


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Bearer wrong-token", "Basic YWxpY2U6eA==",
    "bearer alice-secret-tokenx", "Bearer " + "a" * 5000,
])
async def test_every_endpoint_refuses_without_a_valid_token(alice, anonymous, authorization):
    uid = (await alice.init(1, CS))["upload_id"]
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path, body in endpoints(uid):
        resp = await anonymous.call(method, path, raw=body, headers=headers)
        assert resp.code == 401, (method, path, resp.body)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        if method != "HEAD":
            assert b'"code":"unauthorized"' in resp.body
    # Nothing happened to the upload.
    status = await alice.status(uid)
    assert status["status"] == "in_progress" and status["received"] == []


async def test_scheme_is_case_insensitive(http_server_client):
    api = TokenApi(http_server_client, None)
    code, doc = await api.json("GET", "/uploads",
                               headers={"Authorization": "bearer alice-secret-token"})
    assert code == 200, doc


async def test_401_is_answered_before_the_body_is_read(alice, http_server_port):
    uid = (await alice.init(CS, CS))["upload_id"]
    # Headers announce 64 KiB that never come: the answer must not wait for them.
    status, head = await raw_request(
        http_server_port[1],
        f"PUT /upload/{uid}/chunk?index=0 HTTP/1.1\r\nHost: x\r\nContent-Length: {CS}\r\n\r\n")
    assert status == 401 and b"www-authenticate: bearer" in head.lower()
    status, _ = await raw_request(
        http_server_port[1],
        "POST /upload/init HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
    assert status == 401


async def test_other_owner_gets_404_on_every_endpoint(alice, bob, data_dir):
    data = b"alice's data" * 100
    done = await completed_upload(alice, data)
    open_ = (await alice.init(2 * CS, CS))["upload_id"]
    code, _ = await alice.put_chunk(open_, 0, b"a" * CS)
    assert code == 200
    for uid in (done, open_):
        for method, path, body in endpoints(uid):
            if path in ("/upload/init", "/uploads"):
                continue
            resp = await bob.call(method, path, raw=body)
            assert resp.code == 404, (method, path, resp.code, resp.body)
            if method != "HEAD":
                assert b'"code":"not_found"' in resp.body
            # Indistinguishable from an id that does not exist at all.
            missing = await bob.call(method, path.replace(uid, OTHER_ID), raw=body)
            assert missing.code == 404 and missing.body == resp.body
    code, listing = await bob.json("GET", "/uploads")
    assert code == 200 and listing == {"uploads": []}
    code, listing = await bob.json("GET", "/uploads?filename=f.bin")
    assert code == 200 and listing == {"uploads": []}
    # Alice's uploads are untouched by all of bob's calls.
    code, listing = await alice.json("GET", "/uploads")
    assert sorted(u["upload_id"] for u in listing["uploads"]) == sorted([done, open_])
    assert (await alice.status(open_))["received"] == [0]
    resp = await alice.call("GET", f"/files/{done}")
    assert resp.code == 200 and resp.body == data


async def test_uploads_record_their_owner(alice, bob, runtime):
    a = (await alice.init(1, CS))["upload_id"]
    b = (await bob.init(1, CS))["upload_id"]
    assert (await runtime.store.get_upload(a)).owner == "alice"
    assert (await runtime.store.get_upload(b)).owner == "bob"
    assert runtime.authenticator.enabled is True


async def test_public_routes_stay_public(anonymous):
    for path in ("/healthz", "/openapi.json", "/"):
        resp = await anonymous.call("GET", path)
        assert resp.code == 200, path


async def test_page_says_auth_is_required(anonymous):
    resp = await anonymous.call("GET", "/")
    assert b'"auth_required": true' in resp.body


def test_auth_off_everything_is_local(tmp_path):
    from uploader.runtime import build_runtime
    config = load_config(None, env={}, overrides={"storage": {"data_dir": str(tmp_path)}})
    runtime = build_runtime(config)
    assert runtime.authenticator.enabled is False
    assert runtime.authenticator.owner_for(None) == "local"
    assert runtime.authenticator.owner_for("Bearer anything") == "local"
    runtime.executor.shutdown()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.10", "example.com"])
def test_refuses_anonymous_remote_host(host):
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides={"server": {"host": host}})
    assert str(info.value) == anonymous_remote_message(host)
    # Explicitly allowed, or with auth on, it starts.
    load_config(None, env={}, overrides={"server": {"host": host},
                                         "auth": {"allow_anonymous_remote": True}})
    load_config(None, env={}, overrides={"server": {"host": host}, "auth": dict(AUTH_ON)})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_auth(host):
    load_config(None, env={}, overrides={"server": {"host": host}})


def test_serve_refuses_to_start_on_a_remote_host(tmp_path):
    proc = run_uploader("serve", "--host", "0.0.0.0", "--port", "1", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert anonymous_remote_message("0.0.0.0") in proc.stderr


def test_tokens_from_the_environment():
    h1, h2 = hashlib.sha256(b"one").hexdigest(), hashlib.sha256(b"two").hexdigest()
    config = load_config(None, env={"UPLOADER_AUTH_ENABLED": "true",
                                    "UPLOADER_AUTH_TOKENS": f"alice:{h1}, bob:{h2}"})
    assert config.auth.tokens == {"alice": h1, "bob": h2}


@pytest.mark.parametrize("auth, message", [
    ({"enabled": True}, "auth.tokens must not be empty when auth.enabled is true"),
    ({"tokens": {"alice": "secret"}}, "auth.tokens.alice must be a SHA-256 hex digest"),
    ({"tokens": {"a/b": "0" * 64}}, "auth.tokens: owner name 'a/b'"),
    ({"tokens": {"a": "0" * 64, "b": "0" * 64}}, "auth.tokens: two owners share one token hash"),
])
def test_bad_auth_config(auth, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, env={}, overrides={"auth": auth})


def test_hash_token_command(tmp_path):
    proc = run_uploader("hash-token", cwd=tmp_path, input="s3cret\n", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == hashlib.sha256(b"s3cret").hexdigest()
    empty = run_uploader("hash-token", cwd=tmp_path, input="", timeout=60)
    assert empty.returncode == 2
