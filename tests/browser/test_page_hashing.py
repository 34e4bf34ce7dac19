"""The page's hashing (issue 19): a pool of workers for the chunk MD5s, one
more worker for the whole-file MD5 in index order. Real Chromium, real
workers and WASM, a real server; synchronisation on what the page exposes
(data-state, held chunk requests), never on time."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from support import ServerProcess

from .helpers import CHUNK
from .test_browser_page import Chunks, assert_stored, card_for, upload_id_of

pytestmark = pytest.mark.browser

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    expect = None

POOL = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("server"),
                       {"limits.chunk_size_default": CHUNK, "page.hash_workers": POOL}) as srv:
        yield srv


def hash_workers(page: Any) -> list[Any]:
    return [w for w in page.workers if w.url.endswith("/hash-worker.js")]


def test_the_pool_has_the_configured_size_and_the_upload_is_intact(
        open_page: Callable[..., Any], server: ServerProcess, make_file: Callable[..., Any]
) -> None:
    page = open_page(server)
    f = make_file("pool.bin", 12 * CHUNK + 5)
    # Every chunk PUT held: the upload stays mid-way while the workers are counted.
    chunks = Chunks(page, lambda uid, i, n: "hold")
    page.set_input_files("#file-input", f.path)
    card = card_for(page, "pool.bin")
    expect(card).to_have_attribute("data-state", "uploading")
    # page.hash_workers chunk hashers plus the one keeping the whole-file MD5.
    assert len(hash_workers(page)) == POOL + 1
    chunks.release()
    expect(card).to_have_attribute("data-state", "done")
    sent = {i: md5 for _, i, md5, action in chunks.sent if action == "continue"}
    assert sent == dict(enumerate(f.chunk_md5s))
    assert_stored(server, upload_id_of(card), f.md5)
    # Done: the workers are ended, not left running.
    assert hash_workers(page) == []


def test_whole_file_md5_is_right_when_chunks_are_hashed_out_of_order(
        open_page: Callable[..., Any], server: ServerProcess, make_file: Callable[..., Any]
) -> None:
    """hasher.js driven from the page's origin: chunks 3, 1, 2 are hashed
    (and finished) before chunk 0 is even asked for. Nothing reaches the
    whole-file digest until chunk 0 has; then the digest is the file's."""
    page = open_page(server)
    f = make_file("order.bin", 3 * CHUNK + 1234)   # 4 chunks, the last one short
    # A File as the page gets one, from an input of the test's own (the
    # page's input hands its files to the queue and forgets them).
    page.evaluate("""() => document.body.append(
      Object.assign(document.createElement("input"), { type: "file", id: "test-input" }))""")
    page.set_input_files("#test-input", f.path)
    script = page.locator('script[type="module"]').get_attribute("src")
    hasher_url = re.sub(r"app\.js(\?.*)?$", "hasher.js", script)
    out = page.evaluate("""async ([url, chunk]) => {
      const { Hasher } = await import(url);
      const file = document.getElementById("test-input").files[0];
      const h = new Hasher(file, chunk, { workers: 2 });
      const md5s = {};
      const fed = [];
      for (const i of [3, 1, 2]) { md5s[i] = await h.hash(i); fed.push(h.fedCount); }
      md5s[0] = await h.hash(0);
      const whole = await h.final(4);
      const after = h.fedCount;
      h.close();
      return { md5s, fed, whole, after };
    }""", [hasher_url, CHUNK])
    assert out["md5s"] == {str(i): m for i, m in enumerate(f.chunk_md5s)}
    assert out["fed"] == [0, 0, 0]   # held back: nothing comes before chunk 0
    assert out["after"] == 4
    assert out["whole"] == f.md5 == hashlib.md5(Path(f.path).read_bytes()).hexdigest()
