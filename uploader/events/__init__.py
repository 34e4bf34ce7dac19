"""Lifecycle events: written to an outbox table in the same transaction as
the change they report, then delivered by a dispatcher (Redis Streams,
webhooks). See README "Events and webhooks"."""
