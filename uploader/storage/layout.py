"""Where bytes live under ``data_dir``: every path rule and its confinement.

    <data_dir>/tmp/<id>/data                          every chunk at index*chunk_size
                                                      (local backend; datafile.py)
    <data_dir>/tmp/<id>/claims                        one byte per chunk: 1 = written once
    <data_dir>/tmp/<id>/chunk_<index>.<rand>.part     a re-sent chunk received aside
    <data_dir>/tmp/<id>/chunk_<index>                 a staged chunk (S3 proxy mode; the
                                                      local layout of earlier releases, migrated)
    <data_dir>/tmp/<id>/tail_<index>                  a tus upload's tail (storage/tails.py)
    <data_dir>/store/<id>_<name>.<version>.part       merge in progress (version-named)
    <data_dir>/store/<id>_<name>.inc-<rand>.part      an earlier release's incremental merge
                                                      (swept; the fold now only hashes)
    <data_dir>/store/<id>_<name>                      finished file (its storage key is
                                                      "store/<id>_<name>")

The on-disk name never holds client text except the sanitized filename after
the server's id, and every path is checked to resolve inside ``data_dir``
(defence in depth: ids and names are validated before they get here). The
local backend, its incremental merge and the S3 backend's staging all take
their paths from here.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from ..errors import UploadError
from ..models import Upload
from ..naming import is_upload_id

DIR_MODE, FILE_MODE = 0o700, 0o600
PART = ".part"
FOLD = ".inc-"


class Layout:
    def __init__(self, data_dir: Path | str) -> None:
        self.root = Path(data_dir).resolve()
        self.tmp = self.root / "tmp"
        self.store = self.root / "store"

    def make_dirs(self) -> None:
        for d in (self.root, self.tmp, self.store):
            d.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)

    def inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise UploadError("invalid_request", "path outside the storage root")
        return resolved

    # -- chunks -------------------------------------------------------------

    def chunk_dir(self, upload_id: str) -> Path:
        if not is_upload_id(upload_id):
            raise UploadError("not_found", "no such upload")
        return self.inside(self.tmp / upload_id)

    def chunk_path(self, upload_id: str, index: int) -> Path:
        return self.chunk_dir(upload_id) / f"chunk_{int(index)}"

    def data_path(self, upload_id: str) -> Path:
        """One file per upload holding every chunk at ``index * chunk_size``."""
        return self.chunk_dir(upload_id) / "data"

    def claims_path(self, upload_id: str) -> Path:
        """One byte per chunk: set once a first writer wrote (some of) it
        into the data file; from then on it is only replaced under the lock."""
        return self.chunk_dir(upload_id) / "claims"

    @staticmethod
    def chunk_index(name: str) -> int | None:
        """The index of an old-layout ``chunk_<index>`` name, else None."""
        head, _, index = name.partition("_")
        return int(index) if head == "chunk" and index.isdigit() and len(index) <= 9 else None

    def tail_path(self, upload_id: str, index: int) -> Path:
        """The durable bytes of chunk ``index`` short of its end (tus)."""
        return self.chunk_dir(upload_id) / f"tail_{int(index)}"

    @staticmethod
    def tail_index(name: str) -> int | None:
        """The chunk index of a tail file's name, None for other names."""
        head, _, index = name.partition("_")
        return int(index) if head == "tail" and index.isdigit() and len(index) <= 9 else None

    @staticmethod
    def receiving(final: Path) -> Path:
        """A fresh name for a chunk being received beside its final name:
        two writers of one chunk never share a file."""
        return final.with_name(f"{final.name}.{secrets.token_hex(6)}{PART}")

    # -- merged files ---------------------------------------------------------

    @staticmethod
    def key_for(upload: Upload) -> str:
        return f"store/{upload.upload_id}_{upload.filename}"

    def final_path(self, key: str) -> Path:
        return self.inside(self.root / key)

    def merge_part(self, key: str, version: int) -> Path:
        """The staged file of merge ``version``: a stale merger and its
        successor never write the same file."""
        final = self.final_path(key)
        return final.with_name(f"{final.name}.{int(version)}{PART}")

    @staticmethod
    def parse_merge_part(name: str) -> tuple[str, int] | None:
        """(upload id, version) of a ``merge_part`` file name, else None."""
        if not name.endswith(PART):
            return None
        head, _, version = name.removesuffix(PART).rpartition(".")
        if (version.isascii() and version.isdigit() and len(version) <= 18
                and _owner(head) is not None):
            return head[:32], int(version)
        return None

    @staticmethod
    def parse_fold_part(name: str) -> str | None:
        """The upload id of an incremental merge's file name, else None. The
        fold has no file since the data-file layout; one an earlier release
        left behind is swept like a dead merge."""
        head, sep, tail = name.removesuffix(PART).rpartition(FOLD)
        if not (sep and name.endswith(PART) and len(tail) == 12 and tail.isascii()
                and all(c in "0123456789abcdef" for c in tail)):
            return None
        return _owner(head)


def _owner(head: str) -> str | None:
    """The upload id of "<id>_<name>", the final name of a merged file."""
    return head[:32] if len(head) > 33 and is_upload_id(head[:32]) and head[32] == "_" else None
