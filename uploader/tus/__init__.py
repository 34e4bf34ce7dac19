"""tus 1.0 and the IETF resumable-upload draft on the upload service (docs/tus.md)."""
