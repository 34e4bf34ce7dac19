"""The Tornado application and its HTTP server, from a wired runtime."""

from __future__ import annotations

from typing import Any

import jinja2
import tornado.httpserver
import tornado.httputil
import tornado.web

from .assets import find_assets
from .config import Config
from .connections import make_guarded_server
from .handlers.base import NotFoundHandler
from .handlers.context import HandlerContext
from .handlers.ops import DrainingHandler
from .handlers.routes import route_labels, routes
from .logs import log_request
from .runtime import Runtime, build_runtime


class UploaderApplication(tornado.web.Application):
    """Routes every request to DrainingHandler (503) once shutdown began."""

    runtime: Runtime
    context: HandlerContext

    # The return type is Tornado's own (a private class) to match the override.
    def find_handler(self, request: tornado.httputil.HTTPServerRequest,
                     **kwargs: Any) -> "tornado.web._HandlerDelegate":
        if self.runtime.drain.draining:
            return self.get_handler_delegate(request, DrainingHandler, {"ctx": self.context})
        return super().find_handler(request, **kwargs)


def handler_context(runtime: Runtime) -> HandlerContext:
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(str(find_assets().templates)),
                                   autoescape=True)
    return HandlerContext(config=runtime.config, service=runtime.service,
                          features=runtime.features, authenticator=runtime.authenticator,
                          ratelimiter=runtime.ratelimiter, metrics=runtime.metrics,
                          drain=runtime.drain, health=runtime.health, templates=templates,
                          tus=runtime.tus)


def make_app(config: Config, runtime: Runtime | None = None) -> UploaderApplication:
    """The Tornado application; ``app.runtime`` must be started before serving."""
    runtime = runtime or build_runtime(config)
    ctx = handler_context(runtime)
    table = routes(ctx)
    runtime.metrics.set_routes(route_labels(table))
    app = UploaderApplication(
        table,
        static_path=str(find_assets().static),
        static_url_prefix="/static/",
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        compress_response=False,
        log_function=log_request,  # one access line per request, and request metrics
    )
    app.runtime = runtime
    app.context = ctx
    return app


def make_server(app: tornado.web.Application, config: Config) -> tornado.httpserver.HTTPServer:
    """HTTP settings that matter for streaming: a small default body limit
    (chunk handlers raise it per request) and large socket reads; header and
    body timeouts and a cap on connections per address (connections.py)."""
    return make_guarded_server(app, config)
