"""Benchmarks of the uploader server (``python -m bench``); see bench/README.md."""
