"""ConfigError: what is wrong, and where the value came from."""

from __future__ import annotations


class ConfigError(ValueError):
    """``message`` names the key (``server.port must be ...``); ``source`` says
    where the offending value was set (``config.yaml:18``, ``env
    UPLOADER_SERVER_PORT``, ``--port``), None for a default or an in-code
    override. ``keys`` are the settings the message is about, the first one
    first: the loader looks up the source of the first that was set."""

    def __init__(self, message: str, *, source: str | None = None,
                 keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.source, self.keys = message, source, keys

    def __str__(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message
