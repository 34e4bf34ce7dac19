"""tus 1.0 and the IETF draft by hand, against the app on a real HTTP server:
the edge cases real clients rarely produce."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from typing import Any

import pytest

from support import Api

KiB = 1 << 10
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    # 64 KiB chunks: small bodies cross several chunk boundaries.
    return {"limits": {"chunk_size_min": KiB, "chunk_size_default": 64 * KiB},
            "expiry": {"enabled": True, "interval": 3600}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def create(api: Api, length: int | None, **headers: str) -> str:
    extra = {"Upload-Length": str(length)} if length is not None else {}
    resp = await api.call("POST", "/files/", raw=b"", headers={**TUS, **extra, **headers})
    assert resp.code == 201, resp.body
    return resp.headers["Location"]


def path_of(location: str) -> str:
    return "/files/" + location.rsplit("/", 1)[1]


async def head(api: Api, location: str, **headers: str) -> Any:
    return await api.call("HEAD", path_of(location), headers={**TUS, **headers})


async def patch(api: Api, location: str, offset: int, body: bytes, **headers: str) -> Any:
    return await api.call("PATCH", path_of(location), raw=body,
                          headers={**OCTETS, "Upload-Offset": str(offset), **headers})


async def test_upload_metadata_beyond_the_bounds_is_refused(api: Api) -> None:
    """Upload-Metadata feeds the metadata field, with its bounds (32 keys)."""
    pairs = ",".join(f"k{i} {b64('v')}" for i in range(33))
    resp = await api.call("POST", "/files/", raw=b"", headers={
        **TUS, "Upload-Length": "10", "Upload-Metadata": pairs})
    assert resp.code == 400, resp.body
    assert json.loads(resp.body)["error"]["max_keys"] == 32
    code, doc = await api.json("GET", "/uploads?metadata.k1=v")
    assert code == 200 and doc["uploads"] == []


async def test_options_advertises_version_extensions_and_limits(api: Api) -> None:
    resp = await api.call("OPTIONS", "/files/")
    assert resp.code == 204
    assert resp.headers["Tus-Version"] == "1.0.0"
    extensions = set(resp.headers["Tus-Extension"].split(","))
    assert extensions >= {"creation", "creation-with-upload", "creation-defer-length",
                          "termination", "checksum", "expiration", "concatenation"}
    assert resp.headers["Tus-Max-Size"] == str(50 << 30)
    assert set(resp.headers["Tus-Checksum-Algorithm"].split(",")) >= {"md5", "sha1"}


async def test_create_head_patch_complete(api: Api) -> None:
    data = os.urandom(200 * KiB + 5)
    location = await create(api, len(data), **{
        "Upload-Metadata": f"filename {b64('a/b/../quarterly report.pdf')},filetype {b64('x/y')}"})
    assert location.startswith(f"http://127.0.0.1:{api.port}/files/")
    resp = await head(api, location)
    assert resp.code == 200 and resp.headers["Upload-Offset"] == "0"
    assert resp.headers["Upload-Length"] == str(len(data))
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Tus-Resumable"] == "1.0.0"
    assert "Upload-Expires" in resp.headers and resp.headers["Upload-Expires"].endswith("GMT")
    assert b64("x/y") in resp.headers["Upload-Metadata"]
    # 150 KiB: chunks 0 and 1 (64 KiB each) and a 22 KiB tail.
    resp = await patch(api, location, 0, data[:150 * KiB])
    assert resp.code == 204 and resp.headers["Upload-Offset"] == str(150 * KiB)
    uid = location.rsplit("/", 1)[1]
    status = await api.status(uid)
    assert status["chunk_size"] == 64 * KiB and status["received"] == [0, 1]
    assert status["filename"] == "quarterly report.pdf"
    # The other Upload-Metadata keys are the upload's metadata (filename is not).
    assert status["metadata"] == {"filetype": "x/y"}
    resp = await patch(api, location, 150 * KiB, data[150 * KiB:])
    assert resp.code == 204 and resp.headers["Upload-Offset"] == str(len(data))
    status = await api.status(uid)
    assert status["status"] == "completed"
    assert status["md5"] == hashlib.md5(data).hexdigest()
    resp = await api.call("GET", path_of(location))
    assert resp.body == data
    resp = await head(api, location)  # a finished upload still answers its offset
    assert resp.headers["Upload-Offset"] == str(len(data))


async def test_patches_write_the_chunks_they_fill_in_place(api: Api, runtime: Any) -> None:
    """A PATCH costs what chunk PUTs cost: every chunk it writes from its
    start goes in place into the upload's data file (nothing received aside,
    nothing copied at commit). Only the chunk a PATCH continues from a tail
    is received aside: its first bytes were written, and claimed, before."""
    data = os.urandom(200 * KiB)  # chunks 0-2 of 64 KiB and 8 KiB of chunk 3
    location = await create(api, len(data))
    stats = runtime.storage.write_stats
    start = dict(stats)

    def writes() -> tuple[int, int]:
        return stats["in_place"] - start["in_place"], stats["aside"] - start["aside"]
    assert (await patch(api, location, 0, data[:128 * KiB])).code == 204
    assert writes() == (2, 0)
    assert (await patch(api, location, 128 * KiB, data[128 * KiB:150 * KiB])).code == 204
    assert writes() == (3, 0)  # chunk 2 in place, its 22 KiB copied out as the tail
    resp = await patch(api, location, 150 * KiB, data[150 * KiB:])
    assert resp.code == 204 and writes() == (4, 1)  # chunk 2 again (aside), chunk 3
    status = await api.status(location.rsplit("/", 1)[1])
    assert status["status"] == "completed" and status["md5"] == hashlib.md5(data).hexdigest()
    assert (await api.call("GET", path_of(location))).body == data


async def test_refusals(api: Api) -> None:
    location = await create(api, 1000)
    resp = await api.call("POST", "/files/", raw=b"", headers={"Upload-Length": "5"})
    assert resp.code == 412 and resp.headers["Tus-Version"] == "1.0.0"
    resp = await patch(api, location, 10, b"x" * 10)
    assert resp.code == 409
    resp = await patch(api, location, 0, b"x", **{"Content-Type": "text/plain"})
    assert resp.code == 415
    resp = await patch(api, location, 0, b"x" * 1001)
    assert resp.code == 413
    assert (await head(api, location)).headers["Upload-Offset"] == "0"  # nothing kept
    resp = await head(api, "/files/" + "0" * 32)
    assert resp.code == 404 and "Upload-Offset" not in resp.headers
    resp = await patch(api, "/files/" + "0" * 32, 0, b"x")
    assert resp.code == 404
    resp = await api.call("POST", "/files/", raw=b"",
                          headers={**TUS, "Upload-Length": str((50 << 30) + 1)})
    assert resp.code == 413


async def test_termination(api: Api) -> None:
    location = await create(api, 100 * KiB)
    assert (await patch(api, location, 0, os.urandom(70 * KiB))).code == 204
    resp = await api.call("DELETE", path_of(location), headers=TUS)
    assert resp.code == 204
    assert (await head(api, location)).code == 404
    assert (await patch(api, location, 70 * KiB, b"x")).code == 404
    code, doc = await api.json("GET", "/uploads")
    assert doc["uploads"] == []


async def test_a_patch_cut_mid_body_keeps_what_arrived(api: Api) -> None:
    data = os.urandom(300 * KiB)
    location = await create(api, len(data))
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    sent = 100 * KiB + 123  # one chunk and a tail
    writer.write((f"PATCH {path_of(location)} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                  f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n").encode() + data[:sent])
    await writer.drain()
    await poll(lambda: head_offset(api, location), 0)  # the server is receiving
    writer.close()
    assert await poll(lambda: head_offset(api, location), sent) == sent
    resp = await patch(api, location, sent, data[sent:])
    assert resp.code == 204
    status = await api.status(location.rsplit("/", 1)[1])
    assert status["md5"] == hashlib.md5(data).hexdigest()


async def head_offset(api: Api, location: str) -> int:
    return int((await head(api, location)).headers["Upload-Offset"])


async def poll(read: Any, wanted: int, timeout: float = 10.0) -> int:
    """Bounded poll until ``read()`` returns ``wanted``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = await read()
    while value != wanted:
        assert loop.time() < deadline, f"still {value}, wanted {wanted}"
        await asyncio.sleep(0.02)
        value = await read()
    return value


async def test_second_patch_while_one_is_receiving_is_locked(api: Api) -> None:
    location = await create(api, 200 * KiB)
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write((f"PATCH {path_of(location)} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                  f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                  f"Content-Length: {200 * KiB}\r\n\r\n").encode() + b"y" * 1000)
    await writer.drain()
    resp = await poll_status(lambda: patch(api, location, 0, b"z" * 10), 423)
    assert resp.code == 423
    writer.close()
    await poll(lambda: head_offset(api, location), 1000)


async def poll_status(send: Any, wanted: int, timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    resp = await send()
    while resp.code != wanted and loop.time() < deadline:
        await asyncio.sleep(0.02)
        resp = await send()
    return resp


async def test_checksum_mismatch_is_460_and_drops_the_bytes(api: Api) -> None:
    data = os.urandom(150 * KiB)
    location = await create(api, len(data))
    good = base64.b64encode(hashlib.sha1(data[:130 * KiB]).digest()).decode()
    bad = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    resp = await patch(api, location, 0, data[:130 * KiB], **{"Upload-Checksum": f"sha1 {bad}"})
    assert resp.code == 460
    assert await head_offset(api, location) == 0
    status = await api.status(location.rsplit("/", 1)[1])
    assert status["received"] == []  # the two full chunks were not kept either
    resp = await patch(api, location, 0, data[:130 * KiB], **{"Upload-Checksum": "crc99 AAAA"})
    assert resp.code == 400
    resp = await patch(api, location, 0, data[:130 * KiB], **{"Upload-Checksum": f"sha1 {good}"})
    assert resp.code == 204 and resp.headers["Upload-Offset"] == str(130 * KiB)
    # A refused PATCH that started from a tail and completed the last chunk:
    # the tail it started from must survive.
    resp = await patch(api, location, 130 * KiB, data[130 * KiB:],
                       **{"Upload-Checksum": f"sha1 {bad}"})
    assert resp.code == 460
    assert await head_offset(api, location) == 130 * KiB
    md5 = base64.b64encode(hashlib.md5(data[130 * KiB:]).digest()).decode()
    resp = await patch(api, location, 130 * KiB, data[130 * KiB:],
                       **{"Upload-Checksum": f"md5 {md5}"})
    assert resp.code == 204
    assert (await api.status(location.rsplit("/", 1)[1]))["status"] == "completed"


async def test_deferred_length(api: Api, runtime: Any) -> None:
    data = os.urandom(100 * KiB)
    in_place = runtime.storage.write_stats["in_place"]
    location = await create(api, None, **{"Upload-Defer-Length": "1"})
    resp = await head(api, location)
    assert resp.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in resp.headers
    uid = location.rsplit("/", 1)[1]
    assert (await api.status(uid))["size"] is None
    assert (await patch(api, location, 0, data[:70 * KiB])).code == 204
    # Received aside while the length is unknown: a dropped PATCH's bytes
    # must not lie past the length declared later, in the file merge links.
    assert runtime.storage.write_stats["in_place"] == in_place
    resp = await patch(api, location, 70 * KiB, data[70 * KiB:],
                       **{"Upload-Length": str(len(data))})
    assert resp.code == 204 and resp.headers["Upload-Offset"] == str(len(data))
    status = await api.status(uid)
    assert status["size"] == len(data) and status["status"] == "completed"
    assert status["md5"] == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("sent", [0, 70 * KiB, 128 * KiB], ids=["nothing", "a-tail",
                                                                 "whole-chunks"])
async def test_deferred_length_declared_by_an_empty_patch_completes(api: Api,
                                                                     sent: int) -> None:
    """A stream's end is often known only after its last bytes went out:
    tus-js-client (uploadLengthDeferred) then sends Upload-Length on a PATCH
    with no body. That PATCH answered 204 with offset = length, but the
    upload stayed in_progress forever: no file, its tail never committed."""
    data = os.urandom(sent)
    location = await create(api, None, **{"Upload-Defer-Length": "1"})
    if sent:
        assert (await patch(api, location, 0, data)).code == 204
    resp = await patch(api, location, sent, b"", **{"Upload-Length": str(sent)})
    assert resp.code == 204 and resp.headers["Upload-Offset"] == str(sent)
    status = await api.status(location.rsplit("/", 1)[1])
    assert status["status"] == "completed", status
    assert status["size"] == sent and status["md5"] == hashlib.md5(data).hexdigest()
    resp = await api.call("GET", path_of(location))
    assert resp.code == 200 and resp.body == data
    retry = await patch(api, location, sent, b"", **{"Upload-Length": str(sent)})
    assert retry.code == 204 and retry.headers["Upload-Offset"] == str(sent)


async def test_creation_with_upload(api: Api) -> None:
    data = os.urandom(10 * KiB)
    resp = await api.call("POST", "/files/", raw=data[:4 * KiB], headers={
        **OCTETS, "Upload-Length": str(len(data))})
    assert resp.code == 201 and resp.headers["Upload-Offset"] == str(4 * KiB)
    resp = await patch(api, resp.headers["Location"], 4 * KiB, data[4 * KiB:])
    assert resp.code == 204


async def test_concatenation_rules(api: Api) -> None:
    a, b = os.urandom(70 * KiB), os.urandom(5)
    part_a = await create(api, len(a), **{"Upload-Concat": "partial"})
    part_b = await create(api, len(b), **{"Upload-Concat": "partial"})
    assert (await head(api, part_a)).headers["Upload-Concat"] == "partial"
    assert (await patch(api, part_a, 0, a)).code == 204
    final = {**TUS, "Upload-Concat": f"final;{part_a} {path_of(part_b)}"}
    resp = await api.call("POST", "/files/", raw=b"", headers=final)
    assert resp.code == 400  # part_b is not complete
    assert (await patch(api, part_b, 0, b)).code == 204
    resp = await api.call("POST", "/files/", raw=b"", headers=final)
    assert resp.code == 201
    location = resp.headers["Location"]
    resp = await head(api, location)
    assert resp.headers["Upload-Offset"] == resp.headers["Upload-Length"] == str(len(a + b))
    assert resp.headers["Upload-Concat"].startswith("final;")
    assert (await patch(api, location, len(a + b), b"")).code == 403
    resp = await api.call("GET", path_of(location))
    assert resp.body == a + b
    assert (await head(api, part_a)).code == 404  # consumed


async def test_ietf_draft_by_hand(api: Api) -> None:
    draft = {"Upload-Draft-Interop-Version": "6"}
    resp = await api.call("POST", "/files/", raw=b"abc", headers={
        **draft, "Upload-Complete": "?0", "Upload-Length": "10"})
    assert resp.code == 201 and resp.headers["Upload-Draft-Interop-Version"] == "6"
    location = resp.headers["Location"]
    resp = await api.call("HEAD", path_of(location), headers=draft)
    assert resp.code == 204 and resp.headers["Upload-Offset"] == "3"
    assert resp.headers["Upload-Complete"] == "?0" and resp.headers["Upload-Length"] == "10"
    resp = await api.call("PATCH", path_of(location), raw=b"zz", headers={
        **draft, "Upload-Offset": "1", "Upload-Complete": "?0",
        "Content-Type": "application/partial-upload"})
    assert resp.code == 409 and resp.headers["Upload-Offset"] == "3"
    problem = json.loads(resp.body)
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert problem["type"].endswith("#mismatching-upload-offset")
    assert (problem["expected-offset"], problem["provided-offset"]) == (3, 1)
    resp = await api.call("PATCH", path_of(location), raw=b"defghij", headers={
        **draft, "Upload-Offset": "3", "Upload-Complete": "?1",
        "Content-Type": "application/partial-upload"})
    assert resp.code in (200, 204) and resp.headers["Upload-Complete"] == "?1"
    resp = await api.call("PATCH", path_of(location), raw=b"k", headers={
        **draft, "Upload-Offset": "10", "Upload-Complete": "?1",
        "Content-Type": "application/partial-upload"})
    assert resp.code == 400 and json.loads(resp.body)["type"].endswith("#completed-upload")
    resp = await api.call("GET", path_of(location))
    assert resp.body == b"abcdefghij"


async def test_plain_head_of_a_file_is_still_a_download_probe(api: Api) -> None:
    location = await create(api, 3)
    await patch(api, location, 0, b"abc")
    resp = await api.call("HEAD", path_of(location))  # no tus header
    assert resp.code == 200 and resp.headers["Content-Length"] == "3"
    assert "Upload-Offset" not in resp.headers


async def test_expired_tus_upload_is_swept_with_its_tail(api: Api, runtime: Any) -> None:
    location = await create(api, 100 * KiB)
    assert (await patch(api, location, 0, os.urandom(70 * KiB))).code == 204
    runtime.config.expiry.ttl = 0
    report = await runtime.expirer.sweep()
    assert location.rsplit("/", 1)[1] in report.expired
    assert (await head(api, location)).code == 404
    assert not any((runtime.config.data_dir / "tmp").iterdir())


@pytest.mark.parametrize("digit", ["\xb2", "\xb9"], ids=["superscript-two", "superscript-one"])
async def test_a_number_header_of_non_ascii_digits_is_400(api: Api, digit: str) -> None:
    """Latin-1 superscripts pass str.isdigit() but not int(): Upload-Length
    and Upload-Offset answered 500. Numbers are ASCII digits (issue 13.9)."""
    resp = await api.call("POST", "/files/", raw=b"", headers={**TUS, "Upload-Length": digit})
    assert resp.code == 400 and json.loads(resp.body)["error"]["code"] == "invalid_request"
    location = await create(api, 10)
    resp = await api.call("PATCH", path_of(location), raw=b"x",
                          headers={**OCTETS, "Upload-Offset": digit})
    assert resp.code == 400 and json.loads(resp.body)["error"]["code"] == "invalid_request"
    assert await head_offset(api, location) == 0
