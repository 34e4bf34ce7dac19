"""Fixtures of the tus suite: tus-js-client's node_modules and a server."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from support import ServerProcess
from support.node import TUS_JS_CLIENT, npm_packages


@pytest.fixture(scope="session")
def tus_js_client() -> Path:
    return npm_packages("tus-js-client", TUS_JS_CLIENT)


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()
