"""Upload metadata at init: kept, returned, bounded, filterable (issue 16 item 1)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from uploader import metadata as bounds

KiB = 1 << 10


async def test_metadata_is_kept_and_returned(api):
    meta = {"relative_path": "dir/sub/name.ext", "project": "apollo", "note": "ünïcode ✓"}
    up = await api.init(10, metadata=meta)
    assert up["metadata"] == meta
    assert (await api.status(up["upload_id"]))["metadata"] == meta
    code, listed = await api.json("GET", "/uploads")
    assert code == 200 and listed["uploads"][0]["metadata"] == meta


async def test_no_metadata_is_an_empty_object(api):
    up = await api.init(10)
    assert up["metadata"] == {}
    assert (await api.status(up["upload_id"]))["metadata"] == {}


@pytest.mark.parametrize("meta, bound", [
    ({f"k{i}": "v" for i in range(bounds.MAX_KEYS + 1)}, {"max_keys": bounds.MAX_KEYS}),
    ({"k" * (bounds.MAX_KEY_BYTES + 1): "v"}, {"max_key_bytes": bounds.MAX_KEY_BYTES}),
    ({"k": "é" * (bounds.MAX_VALUE_BYTES // 2 + 1)},
     {"max_value_bytes": bounds.MAX_VALUE_BYTES, "key": "k"}),
    ({f"k{i}": "v" * 2000 for i in range(5)}, {"max_total_bytes": bounds.MAX_TOTAL_BYTES}),
])
async def test_bounds_answer_400_with_the_bound(api, meta, bound):
    code, doc = await api.json("POST", "/upload/init",
                               {"filename": "f", "size": 1, "chunk_size": 64 * KiB,
                                "metadata": meta})
    assert code == 400, doc
    assert doc["error"]["code"] == "invalid_request"
    for key, value in bound.items():
        assert doc["error"][key] == value
    code, listed = await api.json("GET", "/uploads")
    assert listed["uploads"] == []  # nothing was created


@pytest.mark.parametrize("meta", [
    ["not", "an", "object"], "text", {"k": 1}, {"k": None}, {"": "v"}, {"a b": "v"},
    {"a,b": "v"}, {"k": "nul\u0000"}, {"k": {"nested": "x"}},
])
async def test_wrong_shapes_answer_400(api, meta):
    code, doc = await api.json("POST", "/upload/init",
                               {"filename": "f", "size": 1, "chunk_size": 64 * KiB,
                                "metadata": meta})
    assert code == 400 and doc["error"]["code"] == "invalid_request", doc


async def test_lone_surrogate_is_refused(api):
    raw = b'{"filename":"f","size":1,"chunk_size":65536,"metadata":{"k":"\\ud800"}}'
    resp = await api.call("POST", "/upload/init", raw=raw)
    assert resp.code == 400


async def test_list_filters_by_exact_metadata(api):
    a = await api.init(10, metadata={"project": "apollo", "kind": "video"})
    b = await api.init(10, metadata={"project": "apollo", "kind": "audio"})
    await api.init(10, metadata={"project": "apollo "})  # trailing space: another value
    await api.init(10, metadata={"project": "Apollo"})
    await api.init(10)

    async def ids(query: str) -> set[str]:
        code, doc = await api.json("GET", "/uploads?" + query)
        assert code == 200, doc
        return {u["upload_id"] for u in doc["uploads"]}

    assert await ids("metadata.project=apollo") == {a["upload_id"], b["upload_id"]}
    assert await ids("metadata.project=apollo&metadata.kind=video") == {a["upload_id"]}
    assert await ids("metadata.kind=video&status=completed") == set()
    # With several statuses, every per-status query keeps the metadata filter.
    assert await ids("metadata.kind=video&status=in_progress,completed") == {a["upload_id"]}
    assert await ids("metadata.project=" + quote("apollo ")) != await ids("metadata.project=apollo")
    assert len(await ids("metadata.project=" + quote("apollo "))) == 1
    assert await ids("metadata.missing=x") == set()


async def test_bad_filters_answer_400(api):
    for query in ("metadata.a%20b=x", "metadata.k=1&metadata.k=2",
                  "&".join(f"metadata.k{i}=v" for i in range(bounds.MAX_FILTERS + 1))):
        code, doc = await api.json("GET", "/uploads?" + query)
        assert code == 400 and doc["error"]["code"] == "invalid_request", (query, doc)
