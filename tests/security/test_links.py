"""Signed download links (GET /upload/{id}/link): a link downloads its file
without the bearer token, expires, and opens only the upload and owner it
was made for (links.py). Local storage: the file is streamed by the server;
the redirect to an object store is in tests/test_direct_api.py."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from support import KiB, md5, wait_until_async
from uploader.errors import UploadError
from uploader.links import DownloadLinks

from .helpers import AUTH_ON, TokenApi

CS = 64 * KiB


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    return {"auth": dict(AUTH_ON), "links": {"expiry": 600}}


async def completed(api: TokenApi, data: bytes) -> str:
    uid = (await api.init(len(data), CS))["upload_id"]
    for i in range(0, len(data), CS):
        code, doc = await api.put_chunk(uid, i // CS, data[i:i + CS])
        assert code == 200, doc
    code, doc = await api.complete(uid, md5(data))
    assert code == 200, doc
    return uid


async def link_of(api: TokenApi, uid: str, query: str = "") -> dict[str, Any]:
    code, link = await api.json("GET", f"/upload/{uid}/link{query}")
    assert code == 200, link
    return link


def with_id(url: str, uid: str) -> str:
    """The same query (expiry, signature) on another upload's file."""
    return f"/files/{uid}?{urlsplit(url).query}"


def with_param(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return f"{parts.path}?{urlencode(query)}"


async def test_a_link_downloads_without_the_token(alice, anonymous) -> None:
    data = os.urandom(3 * CS + 17)
    uid = await completed(alice, data)
    before = time.time()
    link = await link_of(alice, uid)
    assert link["url"].startswith(f"/files/{uid}?expires=")
    assert link["expires_in"] == 600
    expires = int(parse_qs(urlsplit(link["url"]).query)["expires"][0])
    assert before + 600 - 1 <= expires <= time.time() + 600
    assert link["expires_at"].endswith("Z")

    resp = await anonymous.call("GET", link["url"])
    assert resp.code == 200 and resp.body == data
    assert "attachment" in resp.headers["Content-Disposition"]
    ranged = await anonymous.call("GET", link["url"], headers={"Range": "bytes=10-19"})
    assert ranged.code == 206 and ranged.body == data[10:20]
    head = await anonymous.call("HEAD", link["url"])
    assert head.code == 200 and int(head.headers["Content-Length"]) == len(data)
    # The same path without the signature still needs the token.
    assert (await anonymous.call("GET", f"/files/{uid}")).code == 401


async def test_a_link_expires(alice, anonymous) -> None:
    uid = await completed(alice, b"soon gone" * 1000)
    link = await link_of(alice, uid, "?expires_in=1")
    assert link["expires_in"] == 1
    assert (await anonymous.call("GET", link["url"])).code == 200
    expires = int(parse_qs(urlsplit(link["url"]).query)["expires"][0])
    await wait_until_async(lambda: time.time() > expires + 0.01, "the link's expiry", 5)
    code, err = await anonymous.json("GET", link["url"])
    assert code == 401 and err["error"]["code"] == "unauthorized"
    assert "expired" in err["error"]["message"] and err["error"]["retryable"] is False
    # Pushing the expiry out breaks the signature, and says nothing more.
    later = with_param(link["url"], expires=str(expires + 3600))
    code, err = await anonymous.json("GET", later)
    assert code == 401 and err["error"]["message"] == "download link is invalid"


async def test_a_link_opens_only_its_own_upload(alice, bob, anonymous) -> None:
    mine = await completed(alice, b"alice one" * 500)
    other_of_mine = await completed(alice, b"alice two" * 500)
    bobs = await completed(bob, b"bob's file" * 500)
    link = await link_of(alice, mine)
    invalid = {"code": "unauthorized", "message": "download link is invalid", "retryable": False}
    # Reused for another upload of the same owner, or for another owner's
    # upload, or for an id that does not exist: one and the same refusal.
    for uid in (other_of_mine, bobs, "0" * 32):
        for client in (anonymous, bob, alice):
            code, err = await client.json("GET", with_id(link["url"], uid))
            assert code == 401 and err == {"error": invalid}, (uid, err)
    # A forged signature, a malformed one, a missing expiry.
    for url in (with_param(link["url"], signature="0" * 64),
                with_param(link["url"], signature="xyz"),
                f"/files/{mine}?signature={'a' * 64}"):
        code, err = await anonymous.json("GET", url)
        assert code == 401 and err == {"error": invalid}, url
    # Bob cannot have a link made for Alice's upload: it is not his (404).
    code, err = await bob.json("GET", f"/upload/{mine}/link")
    assert code == 404 and err["error"]["code"] == "not_found"


async def test_links_exist_only_for_completed_files(alice) -> None:
    uid = (await alice.init(2 * CS, CS))["upload_id"]
    code, err = await alice.json("GET", f"/upload/{uid}/link")
    assert code == 404 and err["error"]["code"] == "not_found"
    done = await completed(alice, b"x" * 100)
    for query, message in (("?expires_in=601", "expires_in must be between 1 and 600"),
                           ("?expires_in=0", "expires_in must be a positive integer"),
                           ("?expires_in=soon", "expires_in must be a positive integer")):
        code, err = await alice.json("GET", f"/upload/{done}/link{query}")
        assert code == 400 and err["error"]["message"] == message, err


def test_another_instance_with_the_same_secret_opens_the_link() -> None:
    """Several instances share links.secret (docs/multi-instance.md): the
    check depends on nothing but the secret, the upload, its owner and the
    expiry."""
    uid, key = "ab" * 16, b"k" * 32
    signed = DownloadLinks(key, 600).sign(uid, "alice")
    DownloadLinks(key, 600).check(uid, "alice", signed.expires, signed.signature)  # opens
    for links, owner in ((DownloadLinks(b"z" * 32, 600), "alice"), (DownloadLinks(key, 600), "bob")):
        with pytest.raises(UploadError, match="invalid"):
            links.check(uid, owner, signed.expires, signed.signature)
