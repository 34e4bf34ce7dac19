"""The command-line client's progress bar: tqdm when it is installed (the
``client`` extra), else one plain line redrawn twice a second. Standard
library only otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any


class _TextBar:
    """The fallback when tqdm is missing: one line, redrawn at most twice a second."""

    def __init__(self, total: int, desc: str, stream: Any) -> None:
        self.total, self.desc, self.stream = total, desc, stream
        self.n, self._start, self._drawn = 0, time.monotonic(), 0.0
        self._first: int | None = None

    def update_to(self, n: int) -> None:
        if self._first is None:
            self._first = n  # bytes already on the server do not count for speed
        self.n = n
        now = time.monotonic()
        if now - self._drawn >= 0.5 or n >= self.total:
            self._drawn = now
            rate = (n - self._first) / max(now - self._start, 1e-6) / (1 << 20)
            pct = 100 * n / self.total if self.total else 100
            self.stream.write(f"\r{self.desc}: {pct:5.1f}% {n / (1 << 20):,.1f}"
                              f"/{self.total / (1 << 20):,.1f} MiB {rate:,.1f} MiB/s")
            self.stream.flush()

    def write(self, msg: str) -> None:
        self.stream.write(f"\r{msg}\n" if self.n else f"{msg}\n")

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


class _TqdmBar:
    def __init__(self, total: int, desc: str, stream: Any) -> None:
        from tqdm import tqdm
        self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                         file=stream, dynamic_ncols=True, miniters=1)
        self._first = True

    def update_to(self, n: int) -> None:
        first, self._first = self._first, False
        if first and n:
            # A resumed upload starts with the server's bytes: count them as
            # the bar's "initial" so the speed shown is this run's, not inflated.
            self._bar.initial = self._bar.n = self._bar.last_print_n = n
            self._bar.refresh()
            return
        self._bar.update(n - self._bar.n)

    def write(self, msg: str) -> None:
        self._bar.write(msg, file=self._bar.fp)

    def close(self) -> None:
        self._bar.close()


def make_bar(total: int, desc: str, quiet: bool) -> Any:
    if quiet:
        return None
    try:
        return _TqdmBar(total, desc, sys.stderr)
    except ImportError:
        return _TextBar(total, desc, sys.stderr)
