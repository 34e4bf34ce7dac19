"""The page's resume list pages through GET /uploads (issue 21.3): with more
unfinished uploads on the server than one page holds, an upload from an
earlier visit that is older than the first page is still offered, not
dropped as gone. Its own server: the count of uploads is this module's."""

from __future__ import annotations

import pytest

from .helpers import CHUNK

pytestmark = pytest.mark.browser

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    expect = None

PAGE = 100  # web/js/resume-list.js LIST_PAGE
SIZE = 3 * CHUNK


def test_resume_list_finds_uploads_beyond_the_first_page(open_page, server) -> None:
    ids = []
    for n in range(PAGE + 5):
        code, up = server.json("POST", "/upload/init",
                               {"filename": f"earlier-{n}.bin", "size": SIZE, "chunk_size": CHUNK})
        assert code == 201
        ids.append(up["upload_id"])
    gone = ids[1]
    assert server.call("DELETE", f"/upload/{gone}").code == 204
    page = open_page(server)
    lists: list[str] = []
    page.on("request", lambda r: lists.append(r.url) if "/uploads" in r.url else None)
    # Local records of this browser: the two oldest (beyond the first page of
    # 100), one deleted meanwhile, and the newest.
    remembered = [(0, ids[0]), (1, gone), (PAGE + 4, ids[-1])]
    page.evaluate("""([records, size, chunkSize]) => { for (const [n, id] of records) {
        const name = `earlier-${n}.bin`, fp = `${name}|${size}|1`;
        localStorage.setItem(`uploader:resume:${fp}`, JSON.stringify({uploadId: id,
          filename: name, size, lastModified: 1, chunkSize, savedAt: Date.now() - n,
          fingerprint: fp})); } }""", [remembered, SIZE, CHUNK])
    page.reload()
    items = page.locator("#resumable li")
    expect(items).to_have_count(2)
    shown = {items.nth(i).get_attribute("data-upload-id") for i in range(2)}
    assert shown == {ids[0], ids[-1]}
    # The deleted one was dropped from this browser's records; the others kept.
    kept = page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('uploader:resume:'))"
                         ".map(k => JSON.parse(localStorage.getItem(k)).uploadId)")
    assert sorted(kept) == sorted([ids[0], ids[-1]])
    assert len(lists) >= 2 and any("cursor=" in url for url in lists), lists
