"""What the wired storage can do, found once when the runtime is wired.

Like tusd's composer: the core ``Storage`` interface is small, a backend may
implement optional capabilities besides (``storage/base.py``), and this record
says which ones this process has. The service, the merges, the quota, recovery
and the page read it; nothing else asks a backend what it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .concat import concatenates
from .storage.base import (IncrementalMerge, PartLimits, PresignedDownloads, PresignedUploads,
                           SpaceReporting, StagedMerges, Storage, UploadHooks)
from .storage.tails import Tails, tails_for


@dataclass(frozen=True)
class Features:
    # Each is the storage itself, typed as the capability, or None.
    incremental: IncrementalMerge | None = None    # chunks folded while they arrive
    direct: PresignedUploads | None = None         # clients PUT chunks to the object store
    downloads: PresignedDownloads | None = None    # downloads may redirect to the store
    space: SpaceReporting | None = None            # free bytes where chunks land
    hooks: UploadHooks | None = None               # per-upload preparation and part limits
    staged: StagedMerges | None = None             # staged merge files recovery can find
    tails: Tails | None = None                     # a tus upload's durable tail (tails.py)
    concatenation: bool = False                    # tus final uploads from partials' bytes

    @classmethod
    def of(cls, storage: Storage, *, incremental: bool = True) -> "Features":
        """``incremental=False`` keeps the fold off even where the backend has
        it (several instances: no process sees a contiguous run of chunks)."""
        direct = storage if isinstance(storage, PresignedUploads) and storage.direct else None
        return cls(
            incremental=storage if incremental and isinstance(storage, IncrementalMerge)
            else None,
            direct=direct,
            downloads=storage if isinstance(storage, PresignedDownloads) else None,
            space=storage if isinstance(storage, SpaceReporting) else None,
            hooks=storage if isinstance(storage, UploadHooks) else None,
            staged=storage if isinstance(storage, StagedMerges) else None,
            tails=tails_for(storage),
            # concat.py: local disk, and S3 (concat_s3.py: parts copied inside S3).
            concatenation=concatenates(storage),
        )

    @property
    def part_limits(self) -> PartLimits | None:
        return self.hooks.part_limits() if self.hooks is not None else None

    @property
    def upload_origin(self) -> str | None:
        """The object store's origin when clients upload to it directly."""
        return self.direct.upload_origin if self.direct is not None else None

    def describe(self) -> dict[str, Any]:
        """For logs and the page: which capabilities are on (no secrets)."""
        return {"incremental_merge": self.incremental is not None,
                "direct_uploads": self.direct is not None,
                "presigned_downloads": self.downloads is not None,
                "space_reporting": self.space is not None}
