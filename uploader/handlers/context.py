"""What a request handler may use: the service and the request guards, never
the store, the storage or the locks behind them (those belong to the service).
``app.make_app`` builds one from the runtime and hands it to every handler
through ``initialize()``."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from ..auth import Authenticator
from ..config import Config
from ..features import Features
from ..health import Health
from ..metrics import Metrics
from ..ratelimit import RateLimiter
from ..service import UploadService
from ..shutdown import Drain
from ..tus.service import TusService


@dataclass(frozen=True)
class HandlerContext:
    config: Config
    service: UploadService
    features: Features
    authenticator: Authenticator
    ratelimiter: RateLimiter
    metrics: Metrics
    drain: Drain
    health: Health
    templates: jinja2.Environment
    tus: TusService
