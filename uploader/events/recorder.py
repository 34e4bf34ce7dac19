"""Building the event of a state change, and what follows its commit.

The service, the merge saga and the sweep build an event before the change it
reports and hand it to the store, which writes it in the same transaction;
``written`` is called only after that committed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from .. import event_model as model
from ..config import Config
from ..event_model import Event
from ..features import Features
from ..metrics import Metrics
from ..models import Upload


class EventLog:
    def __init__(self, config: Config, features: Features, metrics: Metrics) -> None:
        self.config = config
        self.features = features
        self.metrics = metrics
        # Called after a change whose event committed (the dispatcher wakes
        # up at once instead of at its next poll).
        self.on_event: Callable[[Event], None] = lambda event: None

    def make(self, event_type: str, upload: Upload) -> Event | None:
        """The event reporting ``upload`` as it is after a change (None when
        events are off); its time is the upload's ``updated_at``."""
        if not self.config.events.enabled:
            return None
        expiry = self.config.expiry
        doc = upload.to_json(expiry.ttl if expiry.enabled else None)
        if self.features.direct is not None:
            doc["direct"] = True
        event = model.make_event(event_type, upload, doc, upload.updated_at)
        if not (self.config.events.redis_url or self.config.webhooks.endpoints):
            event = replace(event, dispatched=True)
        return event

    def written(self, event: Event | None) -> None:
        if event is not None:
            self.metrics.events_written.labels(event.type).inc()
            if not event.dispatched:
                self.on_event(event)
