"""Fixtures for the security tests: a client for each owner, and one without a token."""

from __future__ import annotations

import pytest

from .helpers import TOKENS, TokenApi


@pytest.fixture
def alice(http_server_client) -> TokenApi:  # type: ignore[no-untyped-def]
    return TokenApi(http_server_client, TOKENS["alice"])


@pytest.fixture
def bob(http_server_client) -> TokenApi:  # type: ignore[no-untyped-def]
    return TokenApi(http_server_client, TOKENS["bob"])


@pytest.fixture
def anonymous(http_server_client) -> TokenApi:  # type: ignore[no-untyped-def]
    return TokenApi(http_server_client, None)
