"""What a request costs beyond its answer (issue 21 item 2, issue 19): the
trips an init and a chunk PUT make to the database thread. Counted with
wrappers around the real calls; the figures themselves are bench/'s."""

from __future__ import annotations

from typing import Any

from support import KiB, Api, md5

CS = 64 * KiB


async def test_the_first_chunk_after_init_writes_no_activity_mark(api: Api, runtime,
                                                                   monkeypatch) -> None:
    """The init set updated_at to now: the first chunk's activity mark
    (an UPDATE per upload) is not needed within the marks' interval."""
    touched: list[Any] = []
    real = runtime.store.touch

    async def touch(ids: Any, *args: Any) -> Any:
        touched.append(list(ids))
        return await real(ids, *args)
    monkeypatch.setattr(runtime.store, "touch", touch)
    up = await api.init(2 * CS, CS)
    code, _ = await api.put_chunk(up["upload_id"], 0, b"a" * CS, md5(b"a" * CS))
    assert code == 200
    assert touched == []
