"""/static/: the page's scripts, styles and vendored files."""

from __future__ import annotations

import json
from typing import Any

import tornado.web
from tornado import httputil

from ..errors import STATUS_TO_CODE, UploadError


class StaticHandler(tornado.web.StaticFileHandler):
    """Tornado's static files, with refusals in the error table's JSON like
    every other answer (Tornado's own are HTML, and its 405 has no Allow)."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # 403 is Tornado's word for a path outside the folder or a folder
        # listing: for a client, simply nothing there.
        code = "not_found" if status_code == 403 else STATUS_TO_CODE.get(status_code, "internal")
        message = ("no such file" if code == "not_found"
                   else httputil.responses.get(status_code, "error").lower())
        error = UploadError(code, message)
        self.clear()
        self.set_status(error.status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        if error.code == "method_not_allowed":
            self.set_header("Allow", "GET, HEAD")  # RFC 9110 15.5.6
        self.finish(json.dumps(error.to_json(), separators=(",", ":")))
