"""The page in direct mode: Chromium PUTs chunks straight to a real S3 server
(a moto_server process of its own, whose bucket answers browsers with the
CORS rule of docs/s3.md only), never through the uploader server.

Part PUTs go through Playwright routing, which can hold them (to reload
mid-upload) and counts them; it also refuses an expired presigned URL as S3
does, because moto checks no expiry.
"""

from __future__ import annotations

import calendar
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from support import MiB, ServerProcess, wait_until
from support.s3 import MotoS3, moto_server
from uploader.auth import hash_token

from .test_browser_page import card_for, percent, upload_id_of

pytestmark = pytest.mark.browser

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    PlaywrightError = Exception
    expect = None

CHUNK = 8 * MiB  # the server's default chunk size, which the page uses
BYTES_IN = "uploader_chunk_bytes_received_total"
TOKEN = "direct-page-token"
EXPIRED = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
           '<Message>Request has expired</Message></Error>')


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoS3]:
    with moto_server(env={"MOTO_DISABLE_GLOBAL_CORS": "true"}) as server:
        yield server


def cors_rule(origin: str) -> dict[str, Any]:
    """The rule docs/s3.md gives for the page's origin."""
    return {"CORSRules": [{"AllowedOrigins": [origin], "AllowedMethods": ["PUT", "GET"],
                           "AllowedHeaders": ["Content-MD5", "Content-Type"],
                           "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600}]}


@pytest.fixture
def direct_server(s3: MotoS3, tmp_path: Path) -> Iterator[Callable[..., tuple[ServerProcess, str]]]:
    """A server in direct mode on a fresh bucket that lets its page PUT parts;
    (server, bucket)."""
    started: list[ServerProcess] = []

    def start(**settings: Any) -> tuple[ServerProcess, str]:
        bucket = s3.new_bucket()
        srv = ServerProcess(tmp_path / f"server{len(started)}", {
            "storage.backend": "s3", "s3.direct": True,
            **{f"s3.{k}": v for k, v in s3.config(bucket).items()}, **settings})
        started.append(srv)
        s3.client.put_bucket_cors(Bucket=bucket, CORSConfiguration=cors_rule(srv.url))
        srv.start()
        return srv, bucket

    yield start
    for srv in started:
        srv.close()


@dataclass
class Put:
    index: int
    signed_at: float
    action: str


class Parts:
    """Routes every presigned part PUT through ``policy(index, attempt)``:
    "continue", or "hold" (until release). An expired URL is refused with
    S3's 403 when the request goes on (moto would take it)."""

    def __init__(self, page: Any, origin: str,
                 policy: Callable[[int, int], str] | None = None) -> None:
        self.origin = origin  # the page's, for the CORS header of a refusal
        self.policy = policy or (lambda i, n: "continue")
        self.seen: list[Put] = []
        self.held: list[tuple[Any, Put]] = []
        page.route(lambda url: "X-Amz-Signature=" in url and "partNumber=" in url, self._handle)

    def _handle(self, route: Any, request: Any) -> None:
        if request.method != "PUT":
            route.continue_()
            return
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        signed = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        index = int(query["partNumber"]) - 1
        attempt = 1 + sum(p.index == index for p in self.seen)
        put = Put(index, signed, self.policy(index, attempt))
        self.seen.append(put)
        if put.action == "hold":
            self.held.append((route, put))
        else:
            self._arrive(route, put, int(query["X-Amz-Expires"]))

    def _arrive(self, route: Any, put: Put, expires: int) -> None:
        """What S3 does when the request arrives: refuse an expired URL."""
        if time.time() > put.signed_at + expires:
            put.action = "403"
            route.fulfill(status=403, body=EXPIRED, content_type="application/xml",
                          headers={"Access-Control-Allow-Origin": self.origin})
        else:
            put.action = "continue"
            route.continue_()

    def release(self, expires: int) -> None:
        self.policy = lambda i, n: "continue"
        held, self.held = self.held, []
        for route, put in held:
            try:
                self._arrive(route, put, expires)
            except PlaywrightError:
                continue  # the page aborted it meanwhile

    def reset(self) -> None:
        """Forget everything; held requests are dropped (the page navigates away)."""
        self.policy = lambda i, n: "continue"
        self.held, self.seen = [], []

    def stored(self) -> list[int]:
        return [p.index for p in self.seen if p.action == "continue"]


def object_md5(s3: MotoS3, bucket: str, server: ServerProcess, upload_id: str) -> str:
    up = server.status(upload_id)
    assert up["status"] == "completed", up
    return hashlib.md5(s3.get(bucket, f"{upload_id}_{up['filename']}")).hexdigest()


def test_100mib_go_straight_to_the_store_and_resume_after_a_reload(
        open_page, direct_server, make_file, s3, artifacts) -> None:
    srv, bucket = direct_server()
    f = make_file("straight-to-s3.bin", 100 * MiB)  # 13 chunks of 8 MiB, the last 4 MiB
    page = open_page(srv)
    completes: list[Any] = []
    page.on("request", lambda r: completes.append(r.post_data_json)
            if r.method == "POST" and r.url.endswith("/complete") else None)
    parts = Parts(page, srv.url, lambda i, n: "hold" if i >= 6 else "continue")

    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(6 * CHUNK, f.size))
    upload_id = upload_id_of(card)
    # The server learns which parts arrived from the store (ListParts).
    before = srv.status(upload_id)
    assert before["direct"] is True and before["received"] == list(range(6))

    parts.reset()
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card).to_have_attribute("data-state", "done")
    assert upload_id_of(card) == upload_id
    # Only the missing ones (a part may be sent twice: the page retries one
    # that stalls, as on a loaded machine).
    assert sorted(set(parts.stored())) == list(range(6, 13))
    assert completes[-1] == {"md5": f.md5}
    assert object_md5(s3, bucket, srv, upload_id) == f.md5
    # Checked part by part (s3.direct_verify: parts): the card does not say
    # the server confirmed the page's whole-file MD5, which it never hashed.
    done = srv.status(upload_id)
    assert (done["verified"], done["md5"], done["md5_claimed"]) == ("parts", None, f.md5)
    expect(card).to_contain_text("every part's MD5 verified by the object store")
    expect(card).not_to_contain_text("verified by the server")
    # Not one chunk byte through the uploader server; URLs came in batches.
    assert srv.metric(BYTES_IN) == 0
    assert srv.metric("uploader_part_urls_signed_total") >= 13
    assert srv.metric("uploader_http_requests_total", route="/upload/{id}/urls",
                      method="POST", status="200") <= 13
    page.screenshot(path=str(artifacts / "direct-done.png"), full_page=True,
                    animations="disabled")


def test_part_urls_come_in_batches_ahead_of_need(open_page, direct_server) -> None:
    """The page's URL cache (part-urls.js) against the real server: one
    request signs the chunk needed now and those waiting behind it."""
    srv, _ = direct_server()
    page = open_page(srv)
    upload_id = srv.init(4 * CHUNK, CHUNK)["upload_id"]
    asked: list[Any] = []
    page.on("request", lambda r: asked.append(r.post_data_json)
            if r.url.endswith(f"/upload/{upload_id}/urls") else None)
    got = page.evaluate("""async (id) => {
        const { Api } = await import("/static/js/api.js");
        const { PartUrls } = await import("/static/js/part-urls.js");
        const urls = new PartUrls(new Api(), id);
        const md5 = (i) => String(i).repeat(32);
        const waiting = [1, 2, 3].map((i) => ({ index: i, md5: md5(i) }));
        const first = await urls.get(0, md5(0), () => waiting);
        const later = await Promise.all([1, 2, 3].map((i) => urls.get(i, md5(i), () => [])));
        return [first, ...later].map((p) => [p.index, p.headers["Content-MD5"]]);
    }""", upload_id)
    assert [index for index, _ in got] == [0, 1, 2, 3]
    assert len({signed for _, signed in got}) == 4  # each signed with its own MD5
    assert asked == [{"parts": [{"index": i, "md5": str(i) * 32} for i in range(4)]}]


def test_urls_that_expire_mid_upload_are_renewed(open_page, direct_server, make_file, s3) -> None:
    expiry = 3
    srv, bucket = direct_server(**{"s3.presign_expiry": expiry})
    f = make_file("slow-link.bin", 4 * CHUNK + 5)
    page = open_page(srv)
    # Chunk 0 goes through; the others wait until every URL signed so far has
    # expired, then arrive at the "store", which refuses them.
    parts = Parts(page, srv.url, lambda i, n: "continue" if i == 0 else "hold")
    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(CHUNK, f.size))
    wait_until(lambda: len(parts.held) >= 1, "held part PUTs", 30)
    last_signed = max(p.signed_at for p in parts.seen)
    wait_until(lambda: time.time() > last_signed + expiry + 1, "the URLs to expire", 10)
    parts.release(expiry)

    expect(card).to_have_attribute("data-state", "done")
    upload_id = upload_id_of(card)
    refused = [p.index for p in parts.seen if p.action == "403"]
    assert refused, "no held URL was refused: nothing expired"
    renewed = [p for p in parts.seen if p.action == "continue" and p.index != 0]
    assert sorted(p.index for p in renewed) == [1, 2, 3, 4]
    assert all(p.signed_at > last_signed for p in renewed)  # signed anew after expiry
    assert object_md5(s3, bucket, srv, upload_id) == f.md5
    assert srv.metric(BYTES_IN) == 0


def test_download_with_auth_on_goes_through_a_signed_link(open_page, direct_server, make_file,
                                                          s3, tmp_path) -> None:
    srv, _ = direct_server(**{"auth.enabled": True,
                              "auth.tokens": f"alice:{hash_token(TOKEN)}"})
    # The token as the page keeps it after asking once (tests/browser/test_browser_page.py).
    page = open_page(srv, accept_downloads=True, storage_state={"origins": [
        {"origin": srv.url, "localStorage": [{"name": "uploader:token", "value": TOKEN}]}]})
    f = make_file("report.bin", CHUNK + 100)
    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card).to_have_attribute("data-state", "done")

    scripted: list[Any] = []  # requests the page's scripts make (fetch, XHR)
    page.on("request", lambda r: scripted.append(r)
            if r.resource_type in ("fetch", "xhr") else None)
    with page.expect_download() as info:
        card.get_by_role("link", name=f"Download {f.path.name}").click()
    saved = tmp_path / "saved.bin"
    info.value.save_as(saved)
    assert hashlib.md5(saved.read_bytes()).hexdigest() == f.md5
    # The page asked for a signed link (with its token) and let the browser
    # follow it: the bytes came from the store, never into the page's memory.
    assert [r.url.split("/upload/")[1] for r in scripted] == [f"{upload_id_of(card)}/link"]
    assert scripted[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert info.value.url.startswith(s3.endpoint + "/")
