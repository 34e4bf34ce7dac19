"""GET /: the browser upload page (Jinja2 template + static JS)."""

from __future__ import annotations

import json
from typing import Any

from .. import __version__
from ..config import Config
from ..features import Features
from .base import BaseHandler


def page_settings(config: Config, features: Features, auth_required: bool) -> dict[str, Any]:
    """What the page needs to know of the server; nothing secret."""
    limits = config.limits
    return {
        "chunk_size": limits.chunk_size_default,
        "chunk_size_min": limits.chunk_size_min,
        "chunk_size_max": limits.chunk_size_max,
        "max_chunks": limits.max_chunks,
        "parallel": limits.parallel_chunks,
        "max_file_size": limits.max_file_size,
        "auth_required": auth_required,
        # Chunks go straight to S3 through presigned URLs (docs/s3.md).
        "direct_upload": features.direct is not None,
        # complete may hold its answer this long: not a stalled request.
        "merge_wait_seconds": config.merge.wait_seconds,
        # Refused by the page before anything is sent (config `page:`).
        "allowed_types": list(config.page.allowed_types),
        "max_files": config.page.max_files,
        "max_total_size": config.page.max_total_size,
        # Size of the page's pool of chunk-hashing workers.
        "hash_workers": config.page.hash_workers,
        # init takes {"metadata": {...}}: folder uploads send their relative path.
        "accepts_metadata": True,
        "version": __version__,
    }


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no '</script>' or '<!--' can
    appear, because every '<', '>' and '&' is escaped."""
    return (json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


class PageHandler(BaseHandler):
    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        # 'wasm-unsafe-eval' lets the hashing worker compile hash-wasm's MD5;
        # blob: images are the thumbnails made in a worker.
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
                        "worker-src 'self' blob:; style-src 'self'; img-src 'self' data: blob:; "
                        "connect-src 'self'; object-src 'none'; base-uri 'none'; "
                        "frame-ancestors 'none'")

    async def prepare(self) -> None:
        pass  # the page itself is public; its API calls carry the token

    def get(self) -> None:
        ctx = self.ctx
        settings = page_settings(ctx.config, ctx.features, ctx.authenticator.enabled)
        origin = ctx.features.upload_origin
        if origin:
            # Direct mode: the page PUTs chunks to the object store's origin.
            csp = self._headers.get("Content-Security-Policy", "")
            self.set_header("Content-Security-Policy",
                            csp.replace("connect-src 'self'", f"connect-src 'self' {origin}"))
        template = ctx.templates.get_template("index.html")
        self.finish(template.render(settings=settings, settings_json=script_json(settings),
                                    static_url=self.static_url))
