"""GET /openapi.json: the hand-written OpenAPI 3 description of the API.

Public like the page: it describes the API, it holds nothing secret.
"""

from __future__ import annotations

from pathlib import Path

from .base import BaseHandler

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.json"


class OpenAPIHandler(BaseHandler):
    _spec: bytes | None = None

    async def prepare(self) -> None:
        self.set_cors_headers()

    def get(self) -> None:
        if OpenAPIHandler._spec is None:
            OpenAPIHandler._spec = SPEC_PATH.read_bytes()
        self.set_header("Cache-Control", "no-cache")
        self.finish(OpenAPIHandler._spec)
