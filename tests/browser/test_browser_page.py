"""The upload page in headless Chromium against a live server (issue 4).

Synchronisation is always on a condition the page or the server exposes
(data-state, aria-valuenow, requests seen by routing), never on time. Chunk
requests go through Playwright routing, which can hold, fail or pass each one.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections import Counter
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from uploader.errors import ERRORS

from .helpers import CHUNK, page_server

pytestmark = pytest.mark.browser

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    PlaywrightError = Exception
    expect = None

CHUNK_URL = re.compile(r"/upload/([0-9a-f]{32})/chunk\?")


def percent(done: int, total: int) -> str:
    """What the page shows in aria-valuenow (Math.floor of the ratio)."""
    return str(int(done / total * 100))


def json_error(status: int, code: str, message: str, headers: dict | None = None,
               retryable: bool | None = None) -> tuple:
    """An error answer as the server words it: the flag from its table unless given."""
    if retryable is None:
        retryable = ERRORS[code].retryable
    body = {"error": {"code": code, "message": message, "retryable": retryable}}
    return (status, json.dumps(body), headers or {})


class Chunks:
    """Routes every chunk PUT through ``policy(upload_id, index, attempt)``,
    which answers "continue", "hold" (kept until release/reset), "abort" (a
    network failure) or (status, body, headers) to answer in the server's
    place. Records what the page sent."""

    def __init__(self, page: Any, policy: Callable[[str, int, int], Any] | None = None):
        self.policy = policy or (lambda uid, i, n: "continue")
        self.attempts: Counter[tuple[str, int]] = Counter()
        self.sent: list[tuple[str, int, str | None, Any]] = []
        self.held: list[Any] = []
        page.route(CHUNK_URL, self._handle)

    def _handle(self, route: Any, request: Any) -> None:
        upload_id = CHUNK_URL.search(request.url).group(1)
        query = parse_qs(urlsplit(request.url).query)
        index = int(query["index"][0])
        self.attempts[(upload_id, index)] += 1
        action = self.policy(upload_id, index, self.attempts[(upload_id, index)])
        self.sent.append((upload_id, index, query.get("md5", [None])[0], action))
        if action == "continue":
            route.continue_()
        elif action == "hold":
            self.held.append((route, len(self.sent) - 1))
        elif action == "abort":
            route.abort("failed")
        else:
            status, body, headers = action
            route.fulfill(status=status, body=body, headers=headers,
                          content_type="application/json")

    def release(self) -> None:
        """Let everything through from now on, including the held requests."""
        self.policy = lambda uid, i, n: "continue"
        held, self.held = self.held, []
        for route, seen in held:
            try:
                route.continue_()
            except PlaywrightError:
                continue  # the page aborted it meanwhile (pause, cancel)
            uid, index, md5, _ = self.sent[seen]
            self.sent[seen] = (uid, index, md5, "continue")

    def reset(self) -> None:
        """Let everything through and forget what was seen; held requests are
        dropped (the page aborted them or is about to navigate away)."""
        self.policy = lambda uid, i, n: "continue"
        self.held = []
        self.sent = []
        self.attempts.clear()

    def indices(self, upload_id: str) -> list[int]:
        return [i for uid, i, _, action in self.sent if uid == upload_id and action == "continue"]


def card_for(page: Any, name: str) -> Any:
    return page.locator(".card", has=page.locator(".file-name", has_text=name))


def upload_id_of(card: Any) -> str:
    expect(card).to_have_attribute("data-upload-id", re.compile(r"^[0-9a-f]{32}$"))
    return card.get_attribute("data-upload-id")


def assert_stored(server: Any, upload_id: str, md5: str) -> dict:
    code, up = server.json("GET", f"/upload/{upload_id}/status")
    assert code == 200 and up["status"] == "completed", up
    assert up["md5"] == md5
    assert server.download_md5(up["location"]) == md5
    return up


def screenshot(page: Any, path: Any) -> None:
    # "disabled" finishes CSS transitions so bars show their real width.
    page.screenshot(path=str(path), full_page=True, animations="disabled")


def test_upload_30mib_in_1mib_chunks_is_stored_intact(page, server, make_file, artifacts):
    f = make_file("holiday-video-30MiB.bin", 30 * CHUNK)
    completes: list[Any] = []
    page.on("request", lambda r: completes.append(r.post_data_json)
            if r.method == "POST" and r.url.endswith("/complete") else None)
    # Hold the second half so the page can be photographed mid-upload.
    chunks = Chunks(page, lambda uid, i, n: "hold" if i >= 15 else "continue")

    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card.locator(".bar")).to_have_attribute("aria-valuenow", "50")
    expect(card).to_have_attribute("data-state", "uploading")
    expect(page.locator("#overall")).to_be_visible()
    screenshot(page, artifacts / "mid-upload.png")

    chunks.release()
    expect(card).to_have_attribute("data-state", "done")
    upload_id = upload_id_of(card)
    up = assert_stored(server, upload_id, f.md5)
    screenshot(page, artifacts / "done.png")

    # Every chunk went once, each with the MD5 the worker computed for it,
    # and complete carried the whole-file MD5.
    assert sorted(chunks.indices(upload_id)) == list(range(30))
    assert {i: md5 for _, i, md5, _ in chunks.sent} == dict(enumerate(f.chunk_md5s))
    assert completes == [{"md5": f.md5}]
    expect(card.locator(".details")).to_contain_text(f.md5)
    download = card.get_by_role("link", name=f"Download {f.path.name}")
    expect(download).to_have_attribute("href", up["location"])
    expect(page.locator("#overall-text")).to_contain_text("1 of 1 done")

    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, artifacts / "done-phone.png")


def test_failed_chunk_requests_are_retried(page, server, make_file):
    f = make_file("flaky-network.bin", 12 * CHUNK + 12345)
    first_failures = {
        0: (502, "<html>Bad Gateway</html>", {}),                     # a proxy, server away
        2: "abort",                                                   # network error
        5: json_error(500, "internal", "boom"),
        7: json_error(503, "unavailable", "database away", {"Retry-After": "1"}),
        9: json_error(429, "rate_limited", "slow down", {"Retry-After": "1"}),
        11: json_error(409, "conflict", "merging"),
    }
    chunks = Chunks(page, lambda uid, i, n: first_failures.get(i, "continue") if n == 1
                    else "continue")

    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card).to_have_attribute("data-state", "done")
    upload_id = upload_id_of(card)
    assert_stored(server, upload_id, f.md5)
    for index in range(13):
        expected = 2 if index in first_failures else 1
        assert chunks.attempts[(upload_id, index)] == expected, index


def test_other_4xx_is_not_retried_and_says_why(page, server, make_file, artifacts):
    f = make_file("refused.bin", 6 * CHUNK)
    chunks = Chunks(page, lambda uid, i, n: json_error(400, "invalid_request", "index is odd today")
                    if i == 3 else "continue")

    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card).to_have_attribute("data-state", "failed")
    expect(card.locator(".message")).to_contain_text("index is odd today")
    screenshot(page, artifacts / "failed.png")
    upload_id = upload_id_of(card)
    assert chunks.attempts[(upload_id, 3)] == 1

    # Retry continues the same upload once the server accepts again.
    chunks.reset()
    card.get_by_role("button", name=f"Retry {f.path.name}").click()
    expect(card).to_have_attribute("data-state", "done")
    assert upload_id_of(card) == upload_id
    assert_stored(server, upload_id, f.md5)


def reload_expecting_resumable(page: Any, chunks: Chunks, name: str, uploaded: str) -> Any:
    """Reload (held chunk requests are dropped) and find ``name`` offered
    again among the unfinished uploads; returns that list."""
    chunks.reset()
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    waiting = page.locator("#resumable")
    expect(waiting).to_be_visible()
    expect(waiting.locator(".file-name")).to_have_text(name)
    expect(waiting.locator(".file-size")).to_contain_text(uploaded)
    return waiting


def test_reload_mid_upload_then_same_file_sends_only_missing_chunks(page, server, make_file,
                                                                     artifacts):
    f = make_file("resume-after-reload.bin", 30 * CHUNK)
    chunks = Chunks(page, lambda uid, i, n: "hold" if i >= 10 else "continue")
    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(10, 30))
    upload_id = upload_id_of(card)
    code, before = server.json("GET", f"/upload/{upload_id}/status")
    assert code == 200 and before["received"] == list(range(10))

    waiting = reload_expecting_resumable(page, chunks, f.path.name, "33% uploaded")
    screenshot(page, artifacts / "after-reload.png")

    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card).to_have_attribute("data-state", "done")
    expect(waiting).to_be_hidden()
    assert upload_id_of(card) == upload_id
    sent = chunks.indices(upload_id)
    assert sorted(sent) == [i for i in range(30) if i not in before["received"]]
    assert len(sent) == len(set(sent))
    # The whole-file MD5 covers the chunks sent before the reload too.
    assert_stored(server, upload_id, f.md5)


def test_an_upload_being_merged_stays_listed_after_a_reload(page, server, make_file):
    """Issue 13.14: the page asked the server for its in_progress uploads only,
    so the record of one being merged was dropped on reload."""
    f = make_file("merging-on-reload.bin", 4 * CHUNK)
    chunks = Chunks(page, lambda uid, i, n: "hold" if i >= 2 else "continue")
    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(2, 4))
    upload_id = upload_id_of(card)
    # Stands for a merge running at this moment in the server (one cannot be
    # held open from outside): the upload's row says merging, as it would.
    with sqlite3.connect(server.data_dir / "uploader.db") as db:
        db.execute("UPDATE uploads SET status = 'merging' WHERE upload_id = ?", (upload_id,))
    try:
        reload_expecting_resumable(page, chunks, f.path.name, "50% uploaded")
    finally:
        with sqlite3.connect(server.data_dir / "uploader.db") as db:
            db.execute("UPDATE uploads SET status = 'in_progress' WHERE upload_id = ?",
                       (upload_id,))


def test_pause_and_resume_from_the_keyboard(page, server, make_file):
    f = make_file("pause-me.bin", 20 * CHUNK)
    chunks = Chunks(page, lambda uid, i, n: "hold" if i >= 8 else "continue")
    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(8, 20))
    upload_id = upload_id_of(card)

    card.get_by_role("button", name=f"Pause {f.path.name}").click()
    expect(card).to_have_attribute("data-state", "paused")
    expect(card.locator(".badge")).to_have_text("Paused")
    resume = card.get_by_role("button", name=f"Resume {f.path.name}")
    expect(resume).to_be_focused()   # focus followed the swapped button
    code, paused = server.json("GET", f"/upload/{upload_id}/status")
    assert paused["received"] == list(range(8))

    chunks.reset()
    page.keyboard.press("Enter")
    expect(card).to_have_attribute("data-state", "done")
    assert sorted(chunks.indices(upload_id)) == list(range(8, 20))
    assert_stored(server, upload_id, f.md5)


def test_cancel_deletes_the_upload(page, server, make_file):
    f = make_file("cancel-me.bin", 10 * CHUNK)
    Chunks(page, lambda uid, i, n: "hold" if i >= 4 else "continue")
    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(4, 10))
    upload_id = upload_id_of(card)
    records = "Object.keys(localStorage).filter(k => k.startsWith('uploader:resume:'))"
    assert len(page.evaluate(records)) == 1

    with page.expect_response(lambda r: r.request.method == "DELETE"
                              and r.url.endswith(f"/upload/{upload_id}")) as deleted:
        card.get_by_role("button", name=f"Cancel {f.path.name}").click()
    assert deleted.value.status == 204
    expect(card).to_have_attribute("data-state", "cancelled")
    code, body = server.json("GET", f"/upload/{upload_id}/status")
    assert code == 404 and body["error"]["code"] == "not_found"
    assert page.evaluate(records) == []


def test_two_files_upload_at_once(page, server, make_file, artifacts):
    a = make_file("first-of-two.bin", 9 * CHUNK + 1)
    b = make_file("second-of-two.bin", 6 * CHUNK + 777)
    # Both files stop after 3 chunks: seeing both there proves they ran together.
    chunks = Chunks(page, lambda uid, i, n: "hold" if i >= 3 else "continue")
    page.set_input_files("#file-input", [a.path, b.path])
    cards = [(f, card_for(page, f.path.name)) for f in (a, b)]
    for f, card in cards:
        expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(3 * CHUNK, f.size))
        expect(card).to_have_attribute("data-state", "uploading")
    screenshot(page, artifacts / "two-files-mid-upload.png")

    chunks.release()
    ids = set()
    for f, card in cards:
        expect(card).to_have_attribute("data-state", "done")
        ids.add(upload_id_of(card))
        assert_stored(server, upload_id_of(card), f.md5)
    assert len(ids) == 2
    expect(page.locator("#overall-text")).to_contain_text("2 of 2 done")


def test_drop_zone_accepts_dropped_files(page, server):
    size = 3 * CHUNK + 5
    expected = hashlib.md5(bytes(i % 251 for i in range(size))).hexdigest()
    transfer = page.evaluate_handle("""(size) => {
        const bytes = new Uint8Array(size);
        for (let i = 0; i < size; i++) bytes[i] = i % 251;
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "dropped.bin", { lastModified: 1700000000000 }));
        return dt;
    }""", size)
    zone = page.locator("#drop-zone")
    zone.dispatch_event("dragenter", {"dataTransfer": transfer})
    expect(zone).to_have_class(re.compile(r"\bdragging\b"))
    zone.dispatch_event("drop", {"dataTransfer": transfer})
    card = card_for(page, "dropped.bin")
    expect(card).to_have_attribute("data-state", "done")
    assert_stored(server, upload_id_of(card), expected)
    expect(zone).not_to_have_class(re.compile(r"\bdragging\b"))


def test_server_restart_mid_upload_is_ridden_out(open_page, make_file, tmp_path, artifacts):
    """What the page does when the server stops mid-upload and comes back:
    chunk PUTs fail as network errors, the card says it is retrying (with
    backoff), and once the server answers again the page asks for the status
    and sends only what is missing."""
    with page_server(tmp_path / "own-server") as srv:
        page = open_page(srv)
        f = make_file("survives-a-restart.bin", 16 * CHUNK)
        chunks = Chunks(page, lambda uid, i, n: "hold" if i >= 6 else "continue")
        page.set_input_files("#file-input", f.path)
        card = card_for(page, f.path.name)
        expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(6, 16))
        upload_id = upload_id_of(card)

        srv.stop()
        sent_before = len(chunks.sent)
        chunks.release()   # the held PUTs now meet a closed port
        expect(card.locator(".message")).to_contain_text("Connection lost; retrying in")
        expect(card).to_have_attribute("data-state", "uploading")
        screenshot(page, artifacts / "server-down.png")

        srv.start()
        expect(card).to_have_attribute("data-state", "done")
        after = [i for uid, i, _, _ in chunks.sent[sent_before:] if uid == upload_id]
        assert after and min(after) >= 6, after   # nothing the server had was sent again
        assert_stored(srv, upload_id, f.md5)


def test_access_token_is_asked_once_kept_and_asked_again_after_401(page, server, make_file):
    """The server side of auth is not wired yet: routing plays it (the page
    says auth_required, API calls without the right Bearer token get 401)."""
    valid = {"token": "first-token"}
    api_headers: list[str | None] = []

    def page_says_auth_required(route: Any) -> None:
        resp = route.fetch()
        html = resp.text().replace('"auth_required": false', '"auth_required": true')
        route.fulfill(response=resp, body=html)

    def require_token(route: Any, request: Any) -> None:
        auth = request.headers.get("authorization")
        api_headers.append(auth)
        if auth == f"Bearer {valid['token']}":
            route.continue_()
        else:
            status, body, headers = json_error(401, "unauthorized", "token missing or wrong")
            route.fulfill(status=status, body=body, content_type="application/json")

    page.route(server.url + "/", page_says_auth_required)
    page.route(re.compile(r"/uploads?(/|\?|$)"), require_token)
    page.reload()
    dialog = page.get_by_role("dialog", name="Access token")
    expect(dialog).to_be_visible()
    page.get_by_label("Token", exact=True).fill("first-token")
    dialog.get_by_role("button", name="Save").click()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    assert page.evaluate("localStorage.getItem('uploader:token')") == "first-token"

    first = make_file("with-token.bin", 2 * CHUNK)
    page.set_input_files("#file-input", first.path)
    expect(card_for(page, first.path.name)).to_have_attribute("data-state", "done")
    assert api_headers and set(api_headers) == {"Bearer first-token"}

    # The token is rotated: the next call gets 401 and the page asks again.
    valid["token"] = "second-token"
    second = make_file("after-rotation.bin", 2 * CHUNK)
    page.set_input_files("#file-input", second.path)
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("refused")
    page.get_by_label("Token", exact=True).fill("second-token")
    dialog.get_by_role("button", name="Save").click()
    card = card_for(page, second.path.name)
    expect(card).to_have_attribute("data-state", "done")
    assert_stored(server, upload_id_of(card), second.md5)
