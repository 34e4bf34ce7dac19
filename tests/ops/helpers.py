"""Helpers for the operations tests: read /metrics, free ports, polling."""

from __future__ import annotations

import socket
import time
from typing import Any, Callable

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics answer: (name, labels) -> value."""
    samples: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet (a counter
    that never moved has no labelled series)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Bounded polling on a condition (never a sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
