from setuptools import find_packages, setup

setup(
    name="uploader",
    version="0.1.0",
    description="Resumable chunked uploads of large files over HTTP (Tornado)",
    python_requires=">=3.10",
    packages=find_packages(include=["uploader", "uploader.*"]),
    include_package_data=True,
    package_data={"uploader": ["openapi.json"]},
    install_requires=[
        "tornado>=6.4,<7",
        "aiomysql>=0.2,<0.4",
        "aiosqlite>=0.20,<0.23",
        "jinja2>=3.1,<4",
        "redis>=5.0,<9",
        "PyYAML>=6.0,<7",
        "prometheus_client>=0.20,<1",
        # Webhook signatures (webhook-id/-timestamp/-signature headers).
        "standardwebhooks>=1.1,<2",
    ],
    extras_require={
        # The Python client needs only the standard library; tqdm draws the
        # CLI's progress bar (a plain line without it).
        "client": ["tqdm>=4.66,<5"],
        # storage.backend: s3
        "s3": ["aiobotocore>=2.13,<4"],
        "test": [
            "tqdm>=4.66,<5",
            # Browser tests drive Debian's /usr/bin/chromium (no browser download).
            "playwright>=1.45,<2",
            "pytest>=8,<10",
            "pytest-tornasync>=0.6,<0.7",
            "pytest-timeout>=2.3,<3",
            # OpenAPI conformance run against a live server (tests/security).
            "schemathesis>=4.0,<5",
            # The S3 suites run the backend against a real moto server.
            "aiobotocore>=2.13,<4",
            "moto[server]>=5,<6",
            # `make test` checks types and a small lint rule set first.
            "mypy>=1.10,<2",
            "ruff>=0.6,<1",
        ],
    },
    entry_points={"console_scripts": ["uploader = uploader.cli:main"]},
)
