"""The REST API end to end over real HTTP against make_app (SQLite, local disk)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path


from support import KiB, Api, chunks_of, md5

CS = 64 * KiB


async def upload_all(api: Api, upload_id: str, parts: list[bytes], order: list[int],
                     parallel: int = 8) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        async with gate:
            code, doc = await api.put_chunk(upload_id, i, parts[i], md5(parts[i]))
            assert code == 200, doc

    await asyncio.gather(*(one(i) for i in order))


def stored_file(data_dir: Path, upload_id: str) -> Path:
    [path] = list((data_dir / "store").glob(f"{upload_id}_*"))
    return path


async def test_full_upload_out_of_order_in_parallel(api: Api, data_dir: Path) -> None:
    data = random.randbytes(20 * CS + 1234)
    parts = chunks_of(data, CS)
    up = await api.init(len(data), CS, md5=md5(data))
    assert up["total_chunks"] == 21 and up["status"] == "in_progress"
    order = list(range(21))
    random.shuffle(order)
    await upload_all(api, up["upload_id"], parts, order, parallel=8)
    status = await api.status(up["upload_id"])
    assert status["received"] == list(range(21))
    code, done = await api.complete(up["upload_id"])
    assert code == 200, done
    assert done["status"] == "completed" and done["md5"] == md5(data)
    assert done["location"] == f"/files/{up['upload_id']}"
    assert stored_file(data_dir, up["upload_id"]).read_bytes() == data
    resp = await api.call("GET", done["location"])
    assert resp.code == 200 and resp.body == data
    # Temp chunks are gone after a successful merge.
    assert not (data_dir / "tmp" / up["upload_id"]).exists()


async def test_resume_from_status(api: Api) -> None:
    data = random.randbytes(6 * CS)
    parts = chunks_of(data, CS)
    up = await api.init(len(data), CS)
    await upload_all(api, up["upload_id"], parts, [0, 2, 4])
    status = await api.status(up["upload_id"])
    assert status["received"] == [0, 2, 4]
    missing = [i for i in range(6) if i not in status["received"]]
    code, err = await api.complete(up["upload_id"])
    assert code == 409 and err["error"]["code"] == "incomplete"
    assert err["error"]["missing"] == missing
    await upload_all(api, up["upload_id"], parts, missing)
    code, done = await api.complete(up["upload_id"], md5(data))
    assert code == 200 and done["md5"] == md5(data)


async def test_duplicate_chunk_same_and_different_bytes(api: Api, data_dir: Path) -> None:
    data = bytearray(random.randbytes(2 * CS))
    up = await api.init(len(data), CS)
    uid = up["upload_id"]
    first = bytes(data[:CS])
    code, doc = await api.put_chunk(uid, 0, first)
    assert code == 200 and doc["received_chunks"] == 1
    code, again = await api.put_chunk(uid, 0, first)
    assert code == 200 and again["md5"] == doc["md5"] and again["received_chunks"] == 1
    replacement = random.randbytes(CS)
    code, replaced = await api.put_chunk(uid, 0, replacement)
    assert code == 200 and replaced["md5"] == md5(replacement)
    assert replaced["received_chunks"] == 1
    data[:CS] = replacement
    code, _ = await api.put_chunk(uid, 1, bytes(data[CS:]))
    assert code == 200
    code, done = await api.complete(uid, md5(bytes(data)))
    assert code == 200
    assert stored_file(data_dir, uid).read_bytes() == bytes(data)


async def test_zero_byte_file(api: Api, data_dir: Path) -> None:
    up = await api.init(0, CS, filename="empty.txt")
    assert up["total_chunks"] == 0
    code, done = await api.complete(up["upload_id"])
    assert code == 200 and done["md5"] == md5(b"")
    resp = await api.call("GET", done["location"])
    assert resp.code == 200 and resp.body == b""
    assert stored_file(data_dir, up["upload_id"]).stat().st_size == 0


async def test_last_chunk_shorter_and_file_smaller_than_a_chunk(api: Api) -> None:
    small = random.randbytes(1000)
    up = await api.init(len(small), CS)
    assert up["total_chunks"] == 1
    code, doc = await api.put_chunk(up["upload_id"], 0, small)
    assert code == 200 and doc["size"] == 1000
    data = random.randbytes(3 * CS + 17)
    up = await api.init(len(data), CS)
    parts = chunks_of(data, CS)
    assert len(parts[-1]) == 17
    # A full-size body for the short last chunk is refused.
    code, err = await api.put_chunk(up["upload_id"], 3, data[:CS])
    assert code == 413 and err["error"]["code"] == "too_large"
    await upload_all(api, up["upload_id"], parts, [3, 2, 1, 0])
    code, done = await api.complete(up["upload_id"], md5(data))
    assert code == 200


async def test_chunk_md5_mismatch_keeps_nothing(api: Api, data_dir: Path) -> None:
    up = await api.init(2 * CS, CS)
    uid = up["upload_id"]
    body = random.randbytes(CS)
    code, err = await api.put_chunk(uid, 0, body, md5(b"other"))
    assert code == 422 and err["error"]["code"] == "checksum_mismatch"
    assert err["error"]["actual"] == md5(body)
    assert (await api.status(uid))["received"] == []
    # Its bytes may have reached the data file, but the chunk is not marked
    # stored (claims byte 2): a merge would count it missing.
    folder = data_dir / "tmp" / uid
    assert {p.name for p in folder.iterdir()} <= {"data", "claims"}
    assert (folder / "claims").read_bytes()[0] != 2


async def test_content_md5_header(api: Api) -> None:
    import base64
    import hashlib
    up = await api.init(CS, CS)
    body = random.randbytes(CS)
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    bad = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    path = f"/upload/{up['upload_id']}/chunk?index=0"
    code, err = await api.json("PUT", path, raw=body, headers={"Content-MD5": bad})
    assert code == 422 and err["error"]["code"] == "checksum_mismatch"
    code, doc = await api.json("PUT", path, raw=body, headers={"Content-MD5": good})
    assert code == 200 and doc["md5"] == md5(body)


async def test_whole_file_md5_mismatch_then_retry(api: Api, data_dir: Path) -> None:
    data = random.randbytes(3 * CS)
    up = await api.init(len(data), CS, md5=md5(b"not this"))
    uid = up["upload_id"]
    await upload_all(api, uid, chunks_of(data, CS), [0, 1, 2])
    code, err = await api.complete(uid)
    assert code == 422 and err["error"]["code"] == "checksum_mismatch"
    assert err["error"]["actual"] == md5(data)
    status = await api.status(uid)
    assert status["status"] == "in_progress" and status["received"] == [0, 1, 2]
    assert status["error"]["code"] == "checksum_mismatch"
    assert list((data_dir / "store").iterdir()) == []  # merged file discarded
    code, done = await api.complete(uid, md5(data))  # the right MD5 given now wins
    assert code == 200 and done["md5"] == md5(data) and "error" not in done


async def test_complete_twice_and_concurrently_merges_once(api: Api, runtime) -> None:
    data = random.randbytes(4 * CS)
    up = await api.init(len(data), CS)
    uid = up["upload_id"]
    await upload_all(api, uid, chunks_of(data, CS), [0, 1, 2, 3])
    merges = 0
    real_merge = runtime.storage.merge

    async def counting_merge(*args, **kwargs):  # instrumentation: counts, delegates
        nonlocal merges
        merges += 1
        return await real_merge(*args, **kwargs)

    runtime.storage.merge = counting_merge
    results = await asyncio.gather(*(api.complete(uid) for _ in range(5)))
    assert [code for code, _ in results] == [200] * 5
    assert {doc["md5"] for _, doc in results} == {md5(data)}
    assert merges == 1
    code, again = await api.complete(uid, md5(data))
    assert code == 200 and again["md5"] == md5(data) and merges == 1
    code, err = await api.complete(uid, md5(b"different"))
    assert code == 422 and err["error"]["code"] == "checksum_mismatch"
    assert (await api.status(uid))["status"] == "completed"


async def test_download_ranges(api: Api) -> None:
    data = random.randbytes(2 * CS + 100)
    up = await api.init(len(data), CS, filename="report final.pdf")
    await upload_all(api, up["upload_id"], chunks_of(data, CS), [0, 1, 2])
    _, done = await api.complete(up["upload_id"])
    path = done["location"]
    whole = await api.call("GET", path)
    assert whole.code == 200 and whole.body == data
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Content-Disposition"].startswith('attachment; filename="report final.pdf"')
    assert whole.headers["X-Content-Type-Options"] == "nosniff"
    part = await api.call("GET", path, headers={"Range": "bytes=100-199"})
    assert part.code == 206 and part.body == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = await api.call("GET", path, headers={"Range": "bytes=-50"})
    assert tail.code == 206 and tail.body == data[-50:]
    open_end = await api.call("GET", path, headers={"Range": f"bytes={len(data) - 10}-"})
    assert open_end.body == data[-10:]
    bad = await api.call("GET", path, headers={"Range": f"bytes={len(data)}-"})
    assert bad.code == 416 and bad.headers["Content-Range"] == f"bytes */{len(data)}"
    head = await api.call("HEAD", path)
    assert head.code == 200 and int(head.headers["Content-Length"]) == len(data)


async def test_download_of_unfinished_upload_is_404(api: Api) -> None:
    up = await api.init(CS, CS)
    code, err = await api.json("GET", f"/files/{up['upload_id']}")
    assert code == 404 and err["error"]["code"] == "not_found"


async def test_delete_removes_data(api: Api, data_dir: Path) -> None:
    data = random.randbytes(2 * CS)
    up = await api.init(len(data), CS)
    uid = up["upload_id"]
    await api.put_chunk(uid, 0, data[:CS])
    assert (data_dir / "tmp" / uid / "data").exists()
    resp = await api.call("DELETE", f"/upload/{uid}")
    assert resp.code == 204
    assert not (data_dir / "tmp" / uid).exists()
    code, err = await api.json("GET", f"/upload/{uid}/status")
    assert code == 404
    # A completed upload's file goes too.
    up = await api.init(CS, CS)
    await api.put_chunk(up["upload_id"], 0, data[:CS])
    await api.complete(up["upload_id"])
    assert len(list((data_dir / "store").iterdir())) == 1
    assert (await api.call("DELETE", f"/upload/{up['upload_id']}")).code == 204
    assert list((data_dir / "store").iterdir()) == []


async def test_list_uploads_filters(api: Api) -> None:
    a = await api.init(CS, CS, filename="a.bin")
    b = await api.init(CS, CS, filename="b.bin")
    await api.put_chunk(b["upload_id"], 0, bytes(CS))
    await api.complete(b["upload_id"])
    code, doc = await api.json("GET", "/uploads?status=in_progress")
    assert code == 200 and [u["upload_id"] for u in doc["uploads"]] == [a["upload_id"]]
    code, doc = await api.json("GET", "/uploads?filename=b.bin")
    assert [u["status"] for u in doc["uploads"]] == ["completed"]
    code, doc = await api.json("GET", "/uploads")
    assert {u["upload_id"] for u in doc["uploads"]} == {a["upload_id"], b["upload_id"]}
    code, err = await api.json("GET", "/uploads?status=bogus")
    assert code == 400 and err["error"]["code"] == "invalid_request"


async def test_list_several_statuses(api: Api, runtime) -> None:
    """Issue 13.14: ``?status=in_progress,merging`` (or the parameter twice)
    lists both; a single status stays exact."""
    a = (await api.init(CS, CS, filename="a.bin"))["upload_id"]
    b = (await api.init(CS, CS, filename="b.bin"))["upload_id"]
    c = (await api.init(CS, CS, filename="c.bin"))["upload_id"]
    await api.put_chunk(c, 0, bytes(CS))
    assert (await api.complete(c))[0] == 200
    # b is being merged: the state a merge sets when it starts.
    assert await runtime.store.begin_merge(b, ("in_progress",)) is not None

    async def listed(query: str) -> list[str]:
        code, doc = await api.json("GET", f"/uploads?{query}")
        assert code == 200, doc
        return [u["upload_id"] for u in doc["uploads"]]

    assert await listed("status=in_progress") == [a]
    assert await listed("status=merging") == [b]
    assert await listed("status=in_progress,merging") == [b, a]  # newest first
    assert await listed("status=merging&status=in_progress") == [b, a]
    assert await listed("status=in_progress,merging&filename=a.bin") == [a]
    assert sorted(await listed("status=completed,in_progress,merging")) == sorted([a, b, c])
    code, err = await api.json("GET", "/uploads?status=in_progress,bogus")
    assert code == 400 and err["error"]["code"] == "invalid_request"


async def test_expires_at_follows_activity(api: Api, config) -> None:
    from datetime import datetime, timedelta
    up = await api.init(2 * CS, CS)
    assert up["expires_at"] is None  # expiry is disabled in this config
    config.expiry.enabled = True
    status = await api.status(up["upload_id"])
    updated = datetime.fromisoformat(status["updated_at"].rstrip("Z"))
    expires = datetime.fromisoformat(status["expires_at"].rstrip("Z"))
    assert expires - updated == timedelta(seconds=config.expiry.ttl)
    await api.put_chunk(up["upload_id"], 0, bytes(CS))
    later = await api.status(up["upload_id"])
    assert later["expires_at"] > status["expires_at"]


async def test_merge_over_wait_answers_202_then_completes(api: Api, config) -> None:
    config.merge.wait_seconds = 0
    data = random.randbytes(3 * CS)
    up = await api.init(len(data), CS)
    await upload_all(api, up["upload_id"], chunks_of(data, CS), [0, 1, 2])
    code, doc = await api.complete(up["upload_id"])
    assert code == 202 and doc["status"] == "merging"
    code, err = await api.put_chunk(up["upload_id"], 0, data[:CS])
    assert code == 409 and err["error"]["code"] == "conflict"
    for _ in range(1000):  # bounded poll of the documented way to follow a 202
        status = await api.status(up["upload_id"])
        if status["status"] != "merging":
            break
        await asyncio.sleep(0.01)
    assert status["status"] == "completed" and status["md5"] == md5(data)


async def test_a_suffix_range_of_an_empty_file_is_the_whole_file(api: Api) -> None:
    """``Range: bytes=-1`` on an empty file answered 206 with the impossible
    ``Content-Range: bytes 0--1/0``: the whole (empty) file is the answer."""
    up = await api.init(0, CS)
    code, done = await api.complete(up["upload_id"])
    assert code == 200, done
    for header in ("bytes=-1", "bytes=-100"):
        resp = await api.call("GET", done["location"], headers={"Range": header})
        assert resp.code == 200 and resp.body == b"", (header, resp.headers)
        assert "Content-Range" not in resp.headers
    resp = await api.call("GET", done["location"], headers={"Range": "bytes=0-0"})
    assert resp.code == 416 and resp.headers["Content-Range"] == "bytes */0"


async def test_if_range_that_does_not_match_gets_the_whole_file(api: Api) -> None:
    """RFC 9110 13.1.5: Range counts only while If-Range names this file
    (its ETag, compared strongly); anything else gets all of it."""
    data = random.randbytes(CS + 10)
    up = await api.init(len(data), CS)
    await upload_all(api, up["upload_id"], chunks_of(data, CS), [0, 1])
    _, done = await api.complete(up["upload_id"])
    path = done["location"]
    etag = (await api.call("HEAD", path)).headers["ETag"]
    assert etag == f'"{done["md5"]}"'
    resp = await api.call("GET", path, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert resp.code == 206 and resp.body == data[:10]
    for other in ('"0123"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
        resp = await api.call("GET", path, headers={"Range": "bytes=0-9", "If-Range": other})
        assert resp.code == 200 and resp.body == data, other
        assert "Content-Range" not in resp.headers
