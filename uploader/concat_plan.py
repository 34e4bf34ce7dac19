"""The parts of a tus final upload on S3 over its partials (concat_s3.py):
which ranges S3 copies itself and which this server reads and sends. Pure
arithmetic, so it is tested without an object store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import UploadError

MiB = 1 << 20
# S3's limits (storage/s3.py S3_LIMITS): every part but the last at least
# 5 MiB, at most 10,000 parts.
MIN_PART, MAX_PARTS = 5 * MiB, 10_000
# The most one UploadPartCopy copies: a request of seconds inside S3, well
# within the client's read timeout (10,000 such parts are S3's 5 TiB object).
COPY_PIECE = 512 * MiB


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of source (partial) number ``source``."""

    source: int
    start: int
    end: int


@dataclass
class Part:
    number: int  # S3's part number, from 1
    pieces: list[Piece]
    copied: bool  # one piece copied inside S3; else read here and sent

    @property
    def size(self) -> int:
        return sum(p.end - p.start for p in self.pieces)


def plan_parts(sizes: Sequence[int], *, min_part: int = MIN_PART,
               copy_piece: int = COPY_PIECE, max_parts: int = MAX_PARTS) -> list[Part]:
    """The final's parts over sources of these sizes, in order: every part
    but the last at least ``min_part``; copies of at most ``copy_piece``.

    A source of ``min_part`` or more is copied (in even pieces when larger
    than ``copy_piece``). A shorter one starts a part that is read and sent:
    it takes the sources after it until it reaches ``min_part``, whole when
    what would stay of the next source is itself too short to copy, else
    just the bytes it lacks. So at most ``2 * min_part`` bytes are read per
    short source, and a sent part is below ``2 * min_part``."""
    parts: list[Part] = []
    pending: list[Piece] = []

    def add(pieces: list[Piece], copied: bool) -> None:
        parts.append(Part(len(parts) + 1, pieces, copied))

    for source, size in enumerate(sizes):
        if size <= 0:
            continue
        start = 0
        if pending:
            need = min_part - sum(p.end - p.start for p in pending)
            if size - need < min_part:  # the rest could not be copied: all of it joins
                pending.append(Piece(source, 0, size))
                if sum(p.end - p.start for p in pending) >= min_part:
                    add(pending, False)
                    pending = []
                continue
            pending.append(Piece(source, 0, need))
            add(pending, False)
            pending, start = [], need
        rest = size - start
        if rest < min_part:
            pending = [Piece(source, start, size)]
            continue
        count = -(-rest // copy_piece)
        for k in range(count):
            add([Piece(source, start + rest * k // count, start + rest * (k + 1) // count)],
                True)
    if pending:
        add(pending, False)  # the last part: any size
    if len(parts) > max_parts:
        raise UploadError("too_large", "the partial uploads need more parts than the object "
                          "storage allows in one file", max_parts=max_parts)
    return parts
