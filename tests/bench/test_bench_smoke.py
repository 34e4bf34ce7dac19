"""`python -m bench --quick` runs end to end and prints every figure (no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import REPO_ROOT


@pytest.mark.timeout(120)
def test_bench_quick_prints_every_figure() -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=REPO_ROOT, check=True,
                         capture_output=True, text=True, timeout=110).stdout
    figures = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    names = [f["name"] for f in figures]
    expected = ([f"ingest {s}x{c}MiB" for s in (1, 4, 16) for c in (1, 8, 32)]
                + ["complete 8MiB", "complete 16MiB", "complete 32MiB"])
    for name in expected:
        assert name in names, (name, names)
    for kind in ("peak_rss", "status", "puts_per_s", "tus_ingest", "s3_direct", "s3_server_cpu",
                 "page ", "page_cpu", "page_hash_only",
                 "peer_ingest", "cpu_per_gb", "complete 16MiB vs 8MiB"):
        assert any(n.startswith(kind) for n in names), (kind, names)
    assert [n.split(" (")[0] for n in names if n.startswith("sweep")] == [
        "sweep s per 100k abandoned", "sweep status latency median", "sweep status latency p99"]
    assert sum(n.startswith("puts_per_s") for n in names) == 3
    for backend in ("sqlite", "mysql"):  # issue 21: per-request costs as uploads pile up
        for op in ("init", "chunk PUT 64KiB", "status", "list page", "delete"):
            assert f"scale {backend} {op} @2,000" in names, (backend, op, names)
    assert "scale layout tmp/ chunk folder @2,000" in names
    locks = [f for f in figures if f["name"].startswith("locks ")]
    assert [f["name"] for f in locks] == [f"locks {b} acquire+release {s}"
                                          for b in ("memory", "redis", "mysql", "etcd")
                                          for s in ("median", "p99")]
    if os.environ.get("CI") == "true":  # every service runs there: nothing skipped
        assert not [f for f in locks if f["note"]], locks
    if os.environ.get("CI") == "true":  # Chromium is there: the page is measured
        page = [f for f in figures if f["name"].startswith("page")]
        assert all(f["value"] for f in page), page
    measured = [f for f in figures if not f["name"].startswith("tus_ingest")
                and not f["note"].startswith("skipped")]
    assert all(f["value"] is not None and f["ref_value"] for f in measured)
    # The table is printed too, one row per figure.
    for name in names:
        assert f"\n{name} " in out


@pytest.mark.timeout(120)
def test_bench_s3concat_prints_its_figures() -> None:
    """The opt-in S3 concatenation figures (not part of `make bench`)."""
    out = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "s3concat"],
                         cwd=REPO_ROOT, check=True, capture_output=True, text=True,
                         timeout=110).stdout
    figures = {f["name"]: f for f in (json.loads(line) for line in out.splitlines()
                                      if line.startswith("{"))}
    assert sorted(figures) == ["s3_concat final of 4x8MiB",
                               "s3_concat_server_cpu final of 4x8MiB"]
    timed = figures["s3_concat final of 4x8MiB"]
    assert timed["value"] and timed["ref_value"], timed
    # CPU is counted in clock ticks: a short complete may show 0 on a quick run.
    assert figures["s3_concat_server_cpu final of 4x8MiB"]["value"] is not None
