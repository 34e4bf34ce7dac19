"""Publishing a merge's result through the ``merge_version`` fence when the
database may not have told us the outcome (ARCHITECTURE.md section 5).

``finish_merge`` raising Unavailable does not mean it failed: the UPDATE may
have committed before the connection broke. Discarding the staged file then
could leave a ``completed`` row with no file behind it, so the row is read
back first. Still unreadable: the caller keeps the staged file
(``UploadService._republish`` publishes it if the row says completed; else the
next complete merges again and the part ages out).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from .errors import Unavailable
from .events.model import Event
from .models import COMPLETED, MERGING
from .storage.base import StagedFile
from .store.base import MetadataStore

log = logging.getLogger("uploader.service")

# Re-reads (and the pause between them) of a row whose outcome is unknown: a
# database blip settles at once, a long outage is left to recovery.
SETTLE_ATTEMPTS, SETTLE_PAUSE = 3, 1.0


async def record_completed(store: MetadataStore, upload_id: str, version: int,
                           staged: StagedFile, event: Event | None = None,
                           at: datetime | None = None) -> bool:
    """finish_merge(completed) for ``version``, with its event: True when the
    database holds this result, False when a newer merge fenced it out.
    Raises Unavailable only when the outcome could not be learnt."""
    try:
        return await store.finish_merge(upload_id, version, status=COMPLETED,
                                        md5=staged.md5, storage_key=staged.key, event=event,
                                        at=at)
    except Unavailable:
        log.warning("finish_merge of %s version %d: outcome unknown, re-reading",
                    upload_id, version)
    for attempt in range(SETTLE_ATTEMPTS):
        try:
            current = await store.get_upload(upload_id, with_chunks=False)
            if current is None or current.merge_version != version:
                return False
            if current.status == COMPLETED:
                return current.storage_key == staged.key
            if current.status != MERGING:
                return False
            # Still ours and merging: it did not apply (nor did its event);
            # fenced, so retry it.
            return await store.finish_merge(upload_id, version, status=COMPLETED,
                                            md5=staged.md5, storage_key=staged.key, event=event,
                                            at=at)
        except Unavailable:
            if attempt == SETTLE_ATTEMPTS - 1:
                raise
            await asyncio.sleep(SETTLE_PAUSE)
    raise AssertionError("unreachable")
