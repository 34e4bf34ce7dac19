"""Helpers for the operations tests: read /metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


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
