"""The page as people meet it (issue 18): every width, light and dark,
accessibility checked by axe-core, an outage waited out, folders, paste,
bulk actions, thumbnails, the server's restrictions, German, and resume
after a reload through a stored file handle.

Screenshots of each state go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from support import ServerProcess, wait_until

from .helpers import CHUNK, page_server
from .test_browser_page import (Chunks, assert_stored, card_for, json_error, percent,
                                screenshot, upload_id_of)

pytestmark = pytest.mark.browser

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    expect = None

LONG = "a-really-long-file-name-without-any-spaces-that-goes-on-and-on-" * 3
WIDTHS = (390, 768, 1280)
INIT_URL = re.compile(r"/upload/init$")


def long_name(tag: str, ext: str = ".bin") -> str:
    return f"{tag}-{LONG}{ext}"


def assert_no_overflow(page: Any, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll == width, f"page is {scroll}px wide in a {width}px viewport"


def axe_violations(page: Any, axe_source: str) -> list[dict]:
    """Serious and critical violations of WCAG 2.1 A/AA by axe-core."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source)   # through the debugger: the page's CSP allows no inline script
    results = page.evaluate("""() => axe.run(document, {
        runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']},
        resultTypes: ['violations']})""")
    return [{"id": v["id"], "impact": v["impact"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in results["violations"] if v["impact"] in ("serious", "critical")]


def check_state(page: Any, axe_source: str, artifacts: Path, name: str) -> None:
    """The page as it is now at 390/768/1280 px, light and dark: no
    horizontal overflow, no serious or critical axe violation, screenshots
    at 390 and 1280."""
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for width in WIDTHS:
            assert_no_overflow(page, width)
            if width != 768:
                screenshot(page, artifacts / f"{name}-{width}-{scheme}.png")
        assert axe_violations(page, axe_source) == [], f"{name}, {scheme}"
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1280, "height": 860})


def tiny_png(width: int = 8, height: int = 6) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = b"".join(b"\x00" + bytes([200, 40, 90] * width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_every_state_fits_every_width_and_passes_axe(open_page, server, make_file, artifacts,
                                                     axe_source):
    # An unfinished upload of an earlier visit, for the resume list.
    code, earlier = server.json("POST", "/upload/init",
                                   {"filename": long_name("earlier"), "size": 3 * CHUNK,
                                    "chunk_size": CHUNK})
    assert code == 201
    page = open_page(server)
    check_state(page, axe_source, artifacts, "empty")
    page.evaluate("""([id, name, size]) => localStorage.setItem(
        `uploader:resume:${name}|${size}|1`, JSON.stringify({uploadId: id, filename: name,
        size, lastModified: 1, chunkSize: 1048576, savedAt: Date.now(),
        fingerprint: `${name}|${size}|1`}))""", [earlier["upload_id"], long_name("earlier"),
                                                  3 * CHUNK])
    page.reload()
    expect(page.locator("#resumable")).to_be_visible()

    done = make_file(long_name("done"), CHUNK + 5)
    page.set_input_files("#file-input", done.path)
    expect(card_for(page, done.path.name)).to_have_attribute("data-state", "done")

    failed = make_file(long_name("failed"), 2 * CHUNK)
    refuse = {"on": True}
    chunks = Chunks(page, lambda uid, i, n: json_error(400, "invalid_request", "refused here")
                    if refuse["on"] else "hold" if i >= 1 else "continue")
    page.set_input_files("#file-input", failed.path)
    expect(card_for(page, failed.path.name)).to_have_attribute("data-state", "failed")
    refuse["on"] = False

    paused = make_file(long_name("paused"), 3 * CHUNK)
    page.set_input_files("#file-input", paused.path)
    paused_card = card_for(page, paused.path.name)
    expect(paused_card.locator(".bar")).to_have_attribute("aria-valuenow", percent(1, 3))
    paused_card.get_by_role("button", name=re.compile("^Pause ")).click()
    expect(paused_card).to_have_attribute("data-state", "paused")

    uploading = make_file(long_name("uploading"), 3 * CHUNK)
    page.set_input_files("#file-input", uploading.path)
    uploading_card = card_for(page, uploading.path.name)
    expect(uploading_card.locator(".bar")).to_have_attribute("aria-valuenow", percent(1, 3))

    # Init held: this one stays "hashing" (preparing), the second active file.
    held_inits: list[Any] = []
    page.route(INIT_URL, lambda route: held_inits.append(route))
    hashing = make_file(long_name("hashing"), CHUNK)
    page.set_input_files("#file-input", hashing.path)
    expect(card_for(page, hashing.path.name)).to_have_attribute("data-state", "hashing")

    empty = make_file(long_name("empty"), 0)
    cancelled = make_file(long_name("cancelled"), CHUNK)
    page.set_input_files("#file-input", [empty.path, cancelled.path])
    empty_card = card_for(page, empty.path.name)
    expect(empty_card).to_have_attribute("data-state", "queued")
    # A queued empty file shows no progress (it showed a full bar).
    expect(empty_card.locator(".bar")).to_have_attribute("aria-valuenow", "0")
    cancelled_card = card_for(page, cancelled.path.name)
    cancelled_card.get_by_role("button", name=re.compile("^Cancel ")).click()
    expect(cancelled_card).to_have_attribute("data-state", "cancelled")
    expect(cancelled_card.locator(".bar")).to_have_attribute("aria-valuenow", "0")
    assert cancelled_card.locator(".bar-fill").evaluate("e => e.style.transform") == "scaleX(0)"

    check_state(page, axe_source, artifacts, "all-states")

    # Let everything finish: nothing above was left broken.
    page.unroute(INIT_URL)
    for route in held_inits:
        route.continue_()
    chunks.release()
    for f in (uploading, hashing, empty):
        expect(card_for(page, f.path.name)).to_have_attribute("data-state", "done")


def test_the_file_input_is_not_announced_as_a_second_button(page):
    names = page.locator("#drop-zone").get_by_role("button").all_inner_texts()
    assert sorted(n.strip() for n in names) == ["Choose a folder", "Choose files"]


def test_sizes_are_decimal_as_labelled(open_page, server):
    page = open_page(server, {"max_file_size": 200_000_000})
    expect(page.locator("#drop-hint")).to_contain_text("Up to 200 MB per file.")


def test_an_outage_past_the_quick_retries_is_waited_out(open_page, make_file, tmp_path, artifacts,
                                                        axe_source):
    """The server stops for longer than the quick retries. The card says it
    waits for the server, without a speed or a time left; when the server is
    back the upload finishes with no click, sending only what was missing.
    The slow retries are 10 minutes apart here: finishing proves the
    /healthz probe woke the upload."""
    (tmp_path / "own").mkdir()
    srv = page_server(tmp_path / "own")
    srv.start()
    try:
        page = open_page(srv, {"retry": {"fast": 2, "baseMs": 100, "capMs": 600_000,
                                         "probeMs": 300}})
        f = make_file(long_name("outage"), 12 * CHUNK)
        chunks = Chunks(page, lambda uid, i, n: "hold" if i >= 4 else "continue")
        page.set_input_files("#file-input", f.path)
        card = card_for(page, f.path.name)
        expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(4, 12))
        upload_id = upload_id_of(card)

        srv.stop()
        sent_before = len(chunks.sent)
        chunks.release()
        expect(card).to_have_attribute("data-waiting", "")
        expect(card.locator(".message")).to_contain_text("Waiting for the server")
        expect(card.locator(".badge")).to_have_text("Waiting")
        details = card.locator(".details").inner_text()
        assert "/s" not in details and "left" not in details, details
        assert "/s" not in page.locator("#overall-text").inner_text()
        check_state(page, axe_source, artifacts, "waiting")

        srv.start()
        expect(card).to_have_attribute("data-state", "done")
        after = [i for uid, i, _, _ in chunks.sent[sent_before:] if uid == upload_id]
        assert after and min(after) >= 4, after
        assert_stored(srv, upload_id, f.md5)
    finally:
        srv.stop()


def test_pasted_files_are_uploaded(page, server):
    size = CHUNK + 77
    expected = hashlib.md5(bytes(i % 253 for i in range(size))).hexdigest()
    page.evaluate("""(size) => {
        const bytes = new Uint8Array(size);
        for (let i = 0; i < size; i++) bytes[i] = i % 253;
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "pasted.bin", { lastModified: 1700000000000 }));
        document.body.dispatchEvent(new ClipboardEvent("paste", {
            clipboardData: dt, bubbles: true, cancelable: true }));
    }""", size)
    card = card_for(page, "pasted.bin")
    expect(card).to_have_attribute("data-state", "done")
    assert_stored(server, upload_id_of(card), expected)


def make_folder(root: Path) -> dict[str, bytes]:
    files = {"holiday/a.bin": b"a" * 1000, "holiday/day2/b.bin": b"b" * (CHUNK + 3),
             "holiday/day2/c.bin": b"c" * 10}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def assert_folder_uploaded(page: Any, server: ServerProcess, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        name = rel.rsplit("/", 1)[1]
        card = card_for(page, name)
        expect(card).to_have_attribute("data-state", "done")
        assert_stored(server, upload_id_of(card), hashlib.md5(data).hexdigest())
        folder = rel.rsplit("/", 1)[0]
        expect(card.locator(".file-size")).to_contain_text(f"in {folder}")
        expect(card.locator(".file-name")).to_have_attribute("title", rel)


def test_a_picked_folder_uploads_every_file_with_its_path(page, server, tmp_path):
    files = make_folder(tmp_path)
    records: list[Any] = []
    page.on("request", lambda r: records.append(r.post_data_json)
            if r.url.endswith("/upload/init") else None)
    page.set_input_files("#folder-input", tmp_path / "holiday")
    assert_folder_uploaded(page, server, files)
    # The server takes metadata: each init carries the file's path in the
    # folder, and the server keeps it with the upload.
    assert sorted(r["metadata"]["relative_path"] for r in records) == sorted(files)
    for rel in files:  # found by that metadata (the server is shared by the module's tests)
        code, listed = server.json("GET", f"/uploads?metadata.relative_path={rel}")
        assert code == 200 and listed["uploads"], rel
        assert all(u["metadata"] == {"relative_path": rel} for u in listed["uploads"])


def test_a_dropped_folder_uploads_every_file_with_its_path(page, server, tmp_path):
    """A real drag of a folder from the OS, through Chromium's DevTools
    protocol (a page script cannot make a directory entry)."""
    files = make_folder(tmp_path)
    box = page.locator("#drop-zone").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = page.context.new_cdp_session(page)
    data = {"items": [], "files": [str(tmp_path / "holiday")], "dragOperationsMask": 1}
    for kind in ("dragEnter", "dragOver", "drop"):
        cdp.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": data})
    assert_folder_uploaded(page, server, files)


def test_metadata_carries_the_relative_path_when_the_server_takes_it(open_page, server, tmp_path):
    page = open_page(server, {"accepts_metadata": True})
    files = make_folder(tmp_path)
    bodies: list[Any] = []

    def answer_init(route: Any, request: Any) -> None:
        body = request.post_data_json
        bodies.append(body)
        rest = {k: v for k, v in body.items() if k != "metadata"}  # not on this server yet
        route.continue_(post_data=json.dumps(rest))
    page.route(INIT_URL, answer_init)
    page.set_input_files("#folder-input", tmp_path / "holiday")
    for rel in files:
        expect(card_for(page, rel.rsplit("/", 1)[1])).to_have_attribute("data-state", "done")
    assert sorted(b["metadata"]["relative_path"] for b in bodies) == sorted(files)


def test_pause_all_resume_all_cancel_all(page, server, make_file):
    a = make_file("bulk-a.bin", 6 * CHUNK)
    b = make_file("bulk-b.bin", 6 * CHUNK)
    chunks = Chunks(page, lambda uid, i, n: "hold" if i >= 2 else "continue")
    page.set_input_files("#file-input", [a.path, b.path])
    cards = [card_for(page, f.path.name) for f in (a, b)]
    for card in cards:
        expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(2, 6))
    page.get_by_role("button", name="Pause all").click()
    for card in cards:
        expect(card).to_have_attribute("data-state", "paused")
    expect(page.get_by_role("button", name="Pause all")).to_be_hidden()

    chunks.reset()
    page.get_by_role("button", name="Resume all").click()
    for card, f in zip(cards, (a, b)):
        expect(card).to_have_attribute("data-state", "done")
        assert_stored(server, upload_id_of(card), f.md5)

    c = make_file("bulk-c.bin", 4 * CHUNK)
    d = make_file("bulk-d.bin", 4 * CHUNK)
    Chunks(page, lambda uid, i, n: "hold" if i >= 1 else "continue")
    page.set_input_files("#file-input", [c.path, d.path])
    more = [card_for(page, f.path.name) for f in (c, d)]
    ids = []
    for card in more:
        expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(1, 4))
        ids.append(upload_id_of(card))
    page.get_by_role("button", name="Cancel all").click()
    for card, uid in zip(more, ids):
        expect(card).to_have_attribute("data-state", "cancelled")
        expect(card.locator(".message")).to_be_hidden()   # the server was told
        wait_until(lambda: server.json("GET", f"/upload/{uid}/status")[0] == 404,
                   f"upload {uid} removed")


def test_retry_all_restarts_every_failed_file(page, server, make_file):
    a = make_file("retry-all-a.bin", 2 * CHUNK)
    b = make_file("retry-all-b.bin", 2 * CHUNK)
    chunks = Chunks(page, lambda uid, i, n: json_error(400, "invalid_request", "no") if i == 1
                    else "continue")
    page.set_input_files("#file-input", [a.path, b.path])
    cards = [card_for(page, f.path.name) for f in (a, b)]
    for card in cards:
        expect(card).to_have_attribute("data-state", "failed")
    chunks.reset()
    page.get_by_role("button", name="Retry all").click()
    for card, f in zip(cards, (a, b)):
        expect(card).to_have_attribute("data-state", "done")
        assert_stored(server, upload_id_of(card), f.md5)


def test_a_thumbnail_for_an_image_and_none_for_a_binary(page, tmp_path, make_file):
    image = tmp_path / "picture.png"
    image.write_bytes(tiny_png())
    binary = make_file("not-a-picture.bin", 1000)
    page.set_input_files("#file-input", [image, binary.path])
    thumb = card_for(page, "picture.png").locator("img.thumb")
    expect(thumb).to_be_visible()
    expect(thumb).to_have_attribute("src", re.compile(r"^blob:"))
    assert thumb.evaluate("img => img.complete && img.naturalWidth") == 8
    bin_card = card_for(page, "not-a-picture.bin")
    expect(bin_card).to_have_attribute("data-state", "done")
    expect(bin_card.locator("img.thumb")).to_be_hidden()


def test_the_servers_restrictions_are_enforced_before_upload(open_page, tmp_path, make_file,
                                                             artifacts):
    (tmp_path / "own").mkdir()
    srv = ServerProcess(tmp_path / "own", {"limits.chunk_size_default": CHUNK,
                                           "page.allowed_types": "image/*,.txt",
                                           "page.max_files": 2, "page.max_total_size": 3000})
    srv.start()
    try:
        page = open_page(srv)
        hint = page.locator("#drop-hint")
        expect(hint).to_contain_text("Accepted: image/*, .txt.")
        expect(hint).to_contain_text("At most 2 files.")
        expect(hint).to_contain_text("At most 3 kB in all.")
        inits: list[Any] = []
        page.on("request", lambda r: inits.append(r) if r.url.endswith("/upload/init") else None)
        ok = tmp_path / "notes.txt"
        ok.write_bytes(b"x" * 1000)
        wrong = make_file("program.bin", 100)
        big = tmp_path / "big.txt"
        big.write_bytes(b"y" * 2500)
        page.set_input_files("#file-input", [ok, wrong.path, big])
        refusals = page.locator("#refusals")
        expect(refusals).to_contain_text("program.bin was not added: this server accepts only image/*, .txt.")
        expect(refusals).to_contain_text("big.txt was not added: all files together may not exceed 3 kB.")
        expect(card_for(page, "notes.txt")).to_have_attribute("data-state", "done")
        screenshot(page, artifacts / "restrictions-1280-light.png")
        second, third = tmp_path / "second.txt", tmp_path / "third.txt"
        second.write_bytes(b"2")
        third.write_bytes(b"3")
        page.set_input_files("#file-input", [second, third])
        expect(refusals).to_contain_text("third.txt was not added: at most 2 files at once.")
        expect(card_for(page, "second.txt")).to_have_attribute("data-state", "done")
        assert page.locator(".card").count() == 2
        assert len(inits) == 2
    finally:
        srv.stop()


def test_german_browsers_get_the_page_in_german(open_page, server, make_file, artifacts,
                                                axe_source):
    page = open_page(server, locale="de-DE")
    assert page.evaluate("document.documentElement.lang") == "de"
    expect(page.locator("h1")).to_have_text("Dateien hochladen")
    expect(page.locator("#choose-button")).to_have_text("Dateien auswählen")
    f = make_file("bericht.bin", 1_500_000)
    page.set_input_files("#file-input", f.path)
    card = card_for(page, "bericht.bin")
    expect(card).to_have_attribute("data-state", "done")
    expect(card.locator(".badge")).to_have_text("Fertig")
    expect(card.locator(".file-size")).to_have_text("1,5 MB")
    expect(page.locator("#overall-text")).to_contain_text("1 von 1 fertig")
    expect(card.get_by_role("link", name="bericht.bin: Herunterladen")).to_be_visible()
    check_state(page, axe_source, artifacts, "german-done")


OPFS_PICKER = """
// The OS file dialog cannot be driven from a test: the picker is replaced by
// one that hands out real File System Access handles of files this test wrote
// into the origin-private file system.
window.showOpenFilePicker = async () => {
    const root = await navigator.storage.getDirectory();
    return [await root.getFileHandle(window.__pickName)];
};
"""


def test_resume_after_reload_through_the_stored_file_handle(open_page, server):
    size = 9 * CHUNK
    expected = hashlib.md5(bytes(i % 241 for i in range(size))).hexdigest()
    page = open_page(server)
    page.context.add_init_script(OPFS_PICKER)
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.evaluate("""async (size) => {
        const bytes = new Uint8Array(size);
        for (let i = 0; i < size; i++) bytes[i] = i % 241;
        const root = await navigator.storage.getDirectory();
        const handle = await root.getFileHandle("kept-by-handle.bin", { create: true });
        const w = await handle.createWritable();
        await w.write(bytes);
        await w.close();
        window.__pickName = "kept-by-handle.bin";
    }""", size)
    chunks = Chunks(page, lambda uid, i, n: "hold" if i >= 3 else "continue")
    page.get_by_role("button", name="Choose files").click()
    card = card_for(page, "kept-by-handle.bin")
    expect(card.locator(".bar")).to_have_attribute("aria-valuenow", percent(3, 9))
    upload_id = upload_id_of(card)

    chunks.reset()
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    resume = page.get_by_role("button", name="Resume the upload of kept-by-handle.bin")
    expect(resume).to_be_visible()
    resume.click()   # no file picked: the stored handle is read again
    card = card_for(page, "kept-by-handle.bin")
    expect(card).to_have_attribute("data-state", "done")
    assert upload_id_of(card) == upload_id
    assert sorted(chunks.indices(upload_id)) == list(range(3, 9))
    assert_stored(server, upload_id, expected)
