"""The blocking pre-create hook against a real HTTP receiver: allow, reject
(status and message reach the client), change owner and metadata, lower the
size limit, time out (503), be down (503); another owner's upload stays 404
(issue 16 item 3)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from support import free_port

from .receiver import Receiver

KiB = 1 << 10
INIT = {"filename": "a.bin", "size": 100, "chunk_size": 64 * KiB,
        "metadata": {"project": "apollo"}}


@pytest.fixture
def hook(receivers) -> Receiver:
    return receivers()


@pytest.fixture
def hook_url(hook: Receiver) -> str:
    return hook.url


@pytest.fixture
def config_overrides(hook_url: str) -> dict[str, Any]:
    return {"hooks": {"pre_create_url": hook_url, "timeout": 1}}


async def init(api, headers: dict[str, str] | None = None,
               **changes: Any) -> tuple[int, Any, Any]:
    resp = await api.call("POST", "/upload/init", {**INIT, **changes}, headers=headers)
    return resp.code, (json.loads(resp.body) if resp.body else None), resp.headers


async def listed(api) -> list[dict]:
    code, doc = await api.json("GET", "/uploads")
    assert code == 200
    return doc["uploads"]


async def test_allow_sees_the_request_and_allow_listed_headers(api, hook):
    hook.default = (200, {"allow": True})
    code, up, _ = await init(api, {"Authorization": "Bearer app-token", "Cookie": "s=1",
                                   "X-Secret": "not for the hook"})
    assert code == 201, up
    [seen] = hook.received
    assert seen.json() == {"type": "pre-create", "owner": "local", "filename": "a.bin",
                           "size": 100, "chunk_size": 64 * KiB,
                           "metadata": {"project": "apollo"},
                           "headers": {"Authorization": "Bearer app-token", "Cookie": "s=1"}}
    assert up["metadata"] == {"project": "apollo"}
    assert (await api.status(up["upload_id"]))["status"] == "in_progress"


@pytest.mark.parametrize("answer, status, code, message", [
    ((200, {"allow": False, "status": 403, "message": "uploads closed for apollo"}),
     403, "forbidden", "uploads closed for apollo"),
    ((200, {"allow": False, "status": 429, "message": "slow down"}), 429, "rate_limited",
     "slow down"),
    ((401, {"message": "log in first"}), 401, "unauthorized", "log in first"),
    ((418, None), 403, "forbidden", "refused by the pre-create hook"),
])
async def test_reject_reaches_the_client_as_our_error(api, hook, answer, status, code,
                                                      message):
    hook.default = answer
    got, doc, headers = await init(api)
    assert got == status
    # The hook's 429 is retryable like our own; its other refusals are final.
    assert doc == {"error": {"code": code, "message": message, "retryable": status == 429,
                             "hook": "pre-create"}}
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer")
    assert await listed(api) == []  # nothing was created


async def test_change_owner_metadata_and_size(api, runtime, hook):
    hook.default = (200, {"allow": True, "owner": "bob", "metadata": {"tenant": "t1"}})
    code, up, _ = await init(api)
    assert code == 201 and up["metadata"] == {"tenant": "t1"}
    stored = await runtime.store.get_upload(up["upload_id"])
    assert stored.owner == "bob" and stored.metadata == {"tenant": "t1"}
    # The caller is "local": bob's upload is not theirs, on every route.
    code, doc = await api.json("GET", f"/upload/{up['upload_id']}/status")
    assert code == 404 and doc["error"]["code"] == "not_found"
    code, _ = await api.put_chunk(up["upload_id"], 0, b"x" * 100)
    assert code == 404
    assert await listed(api) == []

    hook.default = (200, {"allow": True, "max_size": 99})
    code, doc, _ = await init(api)
    assert code == 413 and doc["error"]["max_file_size"] == 99
    code, up, _ = await init(api, size=99)
    assert code == 201


@pytest.mark.parametrize("answer", [
    500, (200, "not an object"), (200, {"allow": "yes"}), (200, {"allow": True, "owner": ""}),
    (200, {"allow": True, "metadata": {"a b": "x"}}), (200, {"allow": True, "max_size": -1}),
])
async def test_a_broken_answer_fails_closed(api, hook, answer):
    hook.default = answer
    code, doc, headers = await init(api)
    assert code == 503 and doc["error"]["code"] == "unavailable", doc
    assert "Retry-After" in headers
    assert await listed(api) == []


async def test_timeout_is_503(api, hook):
    hook.default = "hang"  # answers only when released, long after hooks.timeout
    code, doc, headers = await init(api)
    assert code == 503 and doc["error"]["code"] == "unavailable"
    assert hook.hanging == 1
    hook.release.set()
    assert await listed(api) == []


@pytest.mark.parametrize("hook_url", [f"http://127.0.0.1:{free_port()}/hook"])
async def test_hook_down_is_503(api, hook_url):
    code, doc, _ = await init(api)
    assert code == 503 and doc["error"]["code"] == "unavailable"
    assert await listed(api) == []
