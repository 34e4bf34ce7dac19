"""Sizes as people write them: the one grammar of config.yaml, the
environment and the command line (``--chunk-size``).

``8388608``, ``8MiB``, ``8M`` and ``8 mib`` are the same size. A bare letter
(``K``, ``M``, ``G``, ``T``) and the IEC names (``KiB`` ... ``TiB``) are powers
of 1024, as in ``dd``, ``truncate`` and most tools that take a size; ``KB``,
``MB``, ``GB`` and ``TB`` are powers of 1000, as SI says, so ``8MB`` is
8,000,000 bytes. Case does not matter; a number without a unit is bytes.

Standard library only: the command-line client imports it.
"""

from __future__ import annotations

import re

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40

UNITS: dict[str, int] = {
    "": 1, "B": 1,
    "K": KiB, "KIB": KiB, "KB": 1000,
    "M": MiB, "MIB": MiB, "MB": 1000**2,
    "G": GiB, "GIB": GiB, "GB": 1000**3,
    "T": TiB, "TIB": TiB, "TB": 1000**4,
}
SIZE_HELP = ("bytes, or a number with a unit: K, M, G, T or KiB, MiB, GiB, TiB "
             "(powers of 1024); KB, MB, GB, TB (powers of 1000)")
# ASCII digits only: str patterns take "\d" for any Unicode digit, and int()
# would read a fullwidth "８MiB" as 8 MiB.
_SIZE_RE = re.compile(r"\s*([0-9]{1,18})\s*([A-Za-z]*)\s*", re.ASCII)


def parse_size(text: str) -> int:
    """``"8MiB"`` -> 8388608. ValueError (saying what a size looks like) otherwise."""
    m = _SIZE_RE.fullmatch(text)
    unit = m.group(2).upper() if m else ""
    if not m or unit not in UNITS:
        raise ValueError(f"not a size: {text!r} ({SIZE_HELP})")
    return int(m.group(1)) * UNITS[unit]


def format_size(n: int) -> str:
    """Bytes for people, in the units ``parse_size`` reads back: 8388608 -> ``8MiB``,
    1500000 -> ``1.4MiB``, 512 -> ``512B``."""
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= factor:
            value = n / factor
            return f"{value:.0f}{unit}" if n % factor == 0 else f"{value:.1f}{unit}"
    return f"{n}B"
