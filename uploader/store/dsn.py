"""The MySQL DSN, parsed without the driver: configuration checks it at
load time, the MySQL store connects with it."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

DSN_FORM = "mysql://user:password@host:port/database"


def parse_dsn(dsn: str) -> dict[str, Any]:
    """``mysql://user[:password]@host[:port]/database`` -> aiomysql kwargs.
    ValueError says what is wrong, never repeating the password."""
    parts = urlsplit(dsn)
    if parts.scheme != "mysql":
        raise ValueError(f"MySQL DSN must start with mysql://, like {DSN_FORM}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"MySQL DSN has a bad port, expected {DSN_FORM}") from None
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ValueError(f"MySQL DSN must name a database: {DSN_FORM}")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": database,
    }
