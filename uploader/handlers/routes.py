"""The route table: every URL the server answers and the handler behind it."""

from __future__ import annotations

from typing import Any

import tornado.web

from ..naming import ID_PATTERN
from .base import NotFoundHandler
from .chunk import ChunkHandler
from .context import HandlerContext
from .direct import PartUrlHandler, PartUrlsHandler
from .files import LinkHandler
from .openapi import OpenAPIHandler
from .ops import DrainingHandler, MetricsHandler, ReadyHandler
from .page import PageHandler
from .static import StaticHandler
from .tus import TusCollectionHandler, TusResourceHandler
from .uploads import (CompleteHandler, HealthHandler, InitHandler, ListHandler, StatusHandler,
                      UploadHandler)

UID = f"({ID_PATTERN})"
Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]


def routes(ctx: HandlerContext) -> list[Route]:
    deps: dict[str, Any] = {"ctx": ctx}
    return [
        (r"/", PageHandler, deps),
        (r"/healthz", HealthHandler, deps),
        (r"/readyz", ReadyHandler, deps),
        (r"/metrics", MetricsHandler, deps),
        (r"/upload/init", InitHandler, deps),
        (rf"/upload/{UID}/chunk", ChunkHandler, deps),
        (rf"/upload/{UID}/chunk/(\d{{1,9}})/url", PartUrlHandler, deps),
        (rf"/upload/{UID}/urls", PartUrlsHandler, deps),
        (rf"/upload/{UID}/link", LinkHandler, deps),
        (rf"/upload/{UID}/status", StatusHandler, deps),
        (rf"/upload/{UID}/complete", CompleteHandler, deps),
        (rf"/upload/{UID}", UploadHandler, deps),
        (r"/uploads", ListHandler, deps),
        # tus 1.0 and the IETF draft (docs/tus.md); GET (and a HEAD without
        # tus headers) of an upload's resource is the download of its file.
        (r"/files", TusCollectionHandler, deps),
        (r"/files/", TusCollectionHandler, deps),
        (rf"/files/{UID}", TusResourceHandler, deps),
        (r"/openapi.json", OpenAPIHandler, deps),
    ]


def route_labels(table: list[Route]) -> dict[type, str]:
    """Handler class -> route label for metrics: the URL patterns, never
    paths holding ids."""
    labels: dict[type, str] = {handler: pattern.replace(UID, "{id}")
                               for pattern, handler, _ in table}
    labels.update({StaticHandler: "/static/", NotFoundHandler: "unmatched",
                   DrainingHandler: "draining"})
    return labels
