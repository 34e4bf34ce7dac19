"""uploader: resumable chunked uploads of large files over HTTP."""

__version__ = "0.1.0"
