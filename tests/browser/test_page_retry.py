"""The page's one retry path: it retries what the server's answer calls
retryable (or when no answer came), and a request that stops moving is
aborted by the stall detector and retried like any network failure."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .helpers import CHUNK
from .test_browser_page import Chunks, assert_stored, card_for, json_error, upload_id_of

pytestmark = pytest.mark.browser

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    expect = None


def test_a_stalled_chunk_and_a_stalled_complete_are_aborted_and_retried(open_page, server,
                                                                        make_file):
    # One second without progress is a stall here (30 s by default); the
    # server holds complete for up to merge_wait_seconds, 0 here.
    page = open_page(server, {"stall_timeout": 1, "merge_wait_seconds": 0})
    f = make_file("stalls-twice.bin", 5 * CHUNK)
    # Chunk 2's first PUT and the first complete reach a server that never
    # answers (held by routing, never released).
    chunks = Chunks(page, lambda uid, i, n: "hold" if (i, n) == (2, 1) else "continue")
    completes: list[Any] = []

    def hold_first_complete(route: Any) -> None:
        completes.append(route)
        if len(completes) > 1:
            route.continue_()
    page.route(re.compile(r"/upload/[0-9a-f]{32}/complete$"), hold_first_complete)

    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card).to_have_attribute("data-state", "done")
    upload_id = upload_id_of(card)
    assert chunks.attempts[(upload_id, 2)] == 2
    assert len(chunks.held) == 1           # the stalled attempt was never answered
    assert len(completes) == 2
    assert_stored(server, upload_id, f.md5)


def test_an_error_the_server_calls_retryable_is_retried(page, server, make_file):
    # A 400 is normally final; the page must follow the flag, not the status.
    f = make_file("retry-by-flag.bin", 3 * CHUNK)
    chunks = Chunks(page, lambda uid, i, n: json_error(400, "invalid_request", "try again",
                                                       retryable=True)
                    if (i, n) == (1, 1) else "continue")
    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card).to_have_attribute("data-state", "done")
    upload_id = upload_id_of(card)
    assert chunks.attempts[(upload_id, 1)] == 2
    assert_stored(server, upload_id, f.md5)


def test_an_error_the_server_calls_final_is_not_retried(page, server, make_file):
    # A 503 is normally retried; a server that says it will not pass is believed.
    f = make_file("final-by-flag.bin", 3 * CHUNK)
    chunks = Chunks(page, lambda uid, i, n: json_error(503, "unavailable", "gone for good",
                                                       retryable=False)
                    if i == 1 else "continue")
    page.set_input_files("#file-input", f.path)
    card = card_for(page, f.path.name)
    expect(card).to_have_attribute("data-state", "failed")
    expect(card.locator(".message")).to_contain_text("gone for good")
    assert chunks.attempts[(upload_id_of(card), 1)] == 1
