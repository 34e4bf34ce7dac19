"""uploader: resumable chunked uploads of large files over HTTP."""

# The one version: packaging reads it (pyproject.toml), `uploader --version`,
# /healthz and the page footer show it.
__version__ = "0.1.0"
# The name on the package index (the import package is `uploader`).
DISTRIBUTION = "resumable-uploader"
