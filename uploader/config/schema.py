"""The typed configuration: every section, every key and its default.

config.yaml shows the same keys with the same defaults (tests/test_config.py
keeps them in step); parsing.py fills these from the file and environment,
validation.py checks the result. Sizes are plain ints of bytes here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..units import GiB, KiB, MiB

LOCK_BACKENDS = ("memory", "redis", "mysql", "etcd")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Keys whose values are sizes in bytes: they take units ("64MiB").
SIZE_KEYS = frozenset({
    "limits.max_file_size", "limits.chunk_size_min", "limits.chunk_size_max",
    "limits.chunk_size_default", "server.read_chunk_size", "server.max_json_body",
    "server.max_buffered", "storage.min_free_bytes", "quota.max_reserved_bytes",
    "connections.min_chunk_rate", "merge.background_over", "page.max_total_size",
})


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8888
    # Seconds a keep-alive connection may sit idle between requests.
    idle_connection_timeout: float = 60.0
    # Bytes Tornado reads from the socket at a time while streaming a chunk.
    read_chunk_size: int = MiB
    # Bytes of one chunk body queued for hashing and writing before reading
    # pauses: bounds memory per stream (16 streams x this).
    max_buffered: int = MiB
    # Largest non-chunk request body (JSON).
    max_json_body: int = 64 * KiB
    # Trust X-Forwarded-For / X-Real-Ip from a reverse proxy.
    xheaders: bool = False
    # Seconds SIGTERM/SIGINT waits for in-flight requests (chunk PUTs) to
    # finish before cutting them; cut chunks are dropped, never recorded.
    shutdown_timeout: float = 30.0


@dataclass
class LimitsConfig:
    max_file_size: int = 50 * GiB
    chunk_size_min: int = 64 * KiB
    chunk_size_max: int = 64 * MiB
    chunk_size_default: int = 8 * MiB
    max_chunks: int = 10_000
    # Parallel chunk PUTs the browser page uses per file.
    parallel_chunks: int = 4


@dataclass
class StorageConfig:
    backend: str = "local"
    data_dir: str = "data"
    # fsync each chunk before answering 200, and each merged file before it is
    # published. Off trades crash durability for speed.
    fsync: bool = True
    # Worker threads for hashing and file I/O.
    io_threads: int = 8
    # Seconds after which an untouched .part file counts as a crashed
    # writer's leftover (removed at start and by the expiry sweep). With
    # several instances on one data_dir keep it above the longest chunk PUT.
    stale_part_age: float = 3600.0
    # Free disk space kept in reserve: init and chunk calls answer 507 once
    # the bytes that active uploads still need would eat into it.
    min_free_bytes: int = 512 * MiB


@dataclass
class S3Config:
    """Used when storage.backend is s3 (docs/s3.md)."""

    # Empty: AWS itself. MinIO, Ceph, R2, moto: their URL.
    endpoint_url: str = ""
    bucket: str = ""
    # Prepended to every object key, e.g. "uploads/".
    prefix: str = ""
    region: str = "us-east-1"
    # Both empty: the standard AWS chain (environment, ~/.aws, instance role).
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)  # kept out of logs
    # auto, path or virtual (path for most self-hosted S3 servers).
    addressing_style: str = "auto"
    # Clients PUT chunk bytes straight to S3 through presigned URLs.
    direct: bool = False
    # How complete verifies a direct upload: parts (each part's Content-MD5 is
    # signed into its URL, the object's ETag must be the multipart ETag of the
    # recorded part MD5s; nothing read back) or readback (the whole object is
    # read once and its MD5 computed). docs/s3.md says what parts cannot prove.
    direct_verify: str = "parts"
    # Seconds a presigned URL (part upload or download) stays valid.
    presign_expiry: int = 300
    # redirect: 302 to a presigned GET; stream: the server relays the bytes.
    download: str = "redirect"


@dataclass
class StoreConfig:
    backend: str = "sqlite"
    # Empty: <data_dir>/uploader.db.
    sqlite_path: str = ""
    mysql_dsn: str = "mysql://root@127.0.0.1:3306/uploader"
    pool_size: int = 10


@dataclass
class LocksConfig:
    # memory (one instance), or shared by several: redis, mysql, etcd.
    backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Prefix of every Redis key (locks, rate limits): deployments sharing one
    # Redis keep apart. See redis_keys.py.
    redis_prefix: str = "uploader:"
    # MySQL named locks; empty: store.mysql_dsn (lock names are prefixed with
    # the database's name, so deployments on one server keep apart).
    mysql_dsn: str = ""
    # Connections of the lock pool: one per lock held or awaited at once.
    mysql_pool_size: int = 16
    # etcd client URLs (members of one cluster), and the prefix of lock keys.
    etcd_endpoints: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    etcd_prefix: str = "uploader/lock/"
    # Seconds before a crashed holder's lock frees itself (a live holder's
    # watchdog keeps extending it).
    ttl: float = 30.0


@dataclass
class MergeConfig:
    # How long complete waits for a merge before answering 202 "merging".
    wait_seconds: float = 20.0
    # complete answers 202 "merging" at once when more than this many bytes
    # are left to merge (status shows merged_bytes meanwhile).
    background_over: int = GiB
    # Fold chunks into the merged file (and its MD5) while they arrive, in the
    # process that receives them, so complete has little left (local storage).
    incremental: bool = True
    # Nice value of the thread that folds chunks (0-19). Higher: folding uses
    # only idle CPU and never slows ingest; what it could not fold is merged
    # at complete. 0: folding competes with ingest for CPU.
    fold_nice: int = 0
    # Where complete's merges run. memory: in the process that answered
    # complete. redis: as a job on a Redis Stream (locks.redis_url) that any
    # instance or `uploader worker` takes; needs locks.backend: redis.
    queue: str = "memory"
    # With queue redis. embedded: the serving instances take jobs too;
    # external: only `uploader worker` processes do (merges leave the
    # instances that serve uploads).
    workers: str = "embedded"
    # Jobs from the queue one instance or worker merges at once.
    concurrency: int = 2


@dataclass
class ExpiryConfig:
    enabled: bool = True
    # Seconds of inactivity after which an unfinished upload is removed.
    ttl: int = 7 * 24 * 3600
    # Seconds between sweeps (each one jittered by +-jitter fraction).
    interval: float = 3600.0
    jitter: float = 0.1
    # Expired uploads claimed and removed per batch (one transaction each);
    # the sweep yields to requests between batches and never holds more.
    batch_size: int = 100


@dataclass
class LoggingConfig:
    # text: human-readable lines; json: one JSON object per line (for log
    # shippers). Access lines carry the same fields in both.
    format: str = "text"
    level: str = "INFO"


@dataclass
class AuthConfig:
    # Require "Authorization: Bearer <token>" on every API call.
    enabled: bool = False
    # owner name -> SHA-256 hex of that owner's token (`uploader hash-token`).
    # Only hashes are stored: a leaked config does not leak the tokens.
    tokens: dict[str, str] = field(default_factory=dict)
    # Serve without auth on a non-loopback address anyway (behind a trusted
    # proxy that authenticates). Off: the server refuses to start.
    allow_anonymous_remote: bool = False


@dataclass
class QuotaConfig:
    # Uploads an owner may have in_progress or merging at once (0: no cap).
    max_active_uploads: int = 1000
    # Bytes an owner may have reserved by active uploads (0: no quota).
    max_reserved_bytes: int = 0


@dataclass
class RateLimitConfig:
    # Token buckets on init and chunk calls; rate in requests per second,
    # burst the bucket size. 0 turns a bucket off (the default: the page
    # and benchmarks send many chunks quickly).
    owner_rate: float = 0.0
    owner_burst: int = 0
    address_rate: float = 0.0
    address_burst: int = 0


@dataclass
class ConnectionsConfig:
    # Seconds a client may take to send a request's headers (Tornado uses the
    # same timer for keep-alive idling, so the smaller of this and
    # server.idle_connection_timeout applies to both).
    header_timeout: float = 30.0
    # Seconds a JSON request body may take.
    body_timeout: float = 60.0
    # A chunk body that sends no byte for this many seconds is cut off.
    chunk_idle_timeout: float = 60.0
    # Slowest average rate (bytes/s) a chunk body may arrive at: its deadline
    # is chunk length / min_chunk_rate + chunk_idle_timeout.
    min_chunk_rate: int = 16 * KiB
    # Open connections one client address may hold (0: no cap).
    max_per_address: int = 128


@dataclass
class CorsConfig:
    # Origins (scheme://host[:port]) whose pages may call the API; empty: no
    # CORS headers at all (same-origin only). "*" allows any origin.
    allow_origins: list[str] = field(default_factory=list)
    # Seconds a browser may cache a preflight answer.
    max_age: int = 600


@dataclass
class EventsConfig:
    # Write lifecycle events to the outbox (the events table) and dispatch them.
    enabled: bool = True
    # Redis Streams sink: empty = no stream. Several instances may share it.
    redis_url: str = ""
    stream: str = "uploader:events"
    # XADD ... MAXLEN ~ this many entries (older ones are trimmed).
    stream_maxlen: int = 100_000
    # Seconds between outbox polls when nothing wakes the dispatcher sooner
    # (a change in this process wakes it at once).
    poll_interval: float = 1.0
    # Seconds a dispatcher owns the events it claimed; a dead one's claims
    # are taken over after this.
    claim_ttl: float = 30.0
    batch_size: int = 100
    # Seconds dispatched events (and finished deliveries) stay in the table.
    retention: float = 7 * 24 * 3600.0


@dataclass
class WebhookEndpoint:
    url: str
    # Standard Webhooks secret: "whsec_" + base64 of 24-64 random bytes.
    secret: str = field(repr=False)
    # Event types sent to this URL; empty = all.
    events: list[str] = field(default_factory=list)
    # Label in metrics and in the deliveries table; default: the URL's host.
    name: str = ""

    @property
    def sink(self) -> str:
        return f"webhook:{self.name}"

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


@dataclass
class WebhooksConfig:
    # [{url, secret, events?: [types], name?}]; env: a JSON list.
    endpoints: list[WebhookEndpoint] = field(default_factory=list)
    # Seconds one POST may take (connect included); then it counts as failed.
    timeout: float = 10.0
    # Seconds from the event on during which failed deliveries are retried;
    # then the delivery is kept as failed (uploader_events_failed_total).
    retry_for: float = 24 * 3600.0
    # First retry delay in seconds; doubles per attempt up to backoff_max.
    backoff_base: float = 1.0
    backoff_max: float = 600.0
    # POSTs in flight at once per instance (a hanging receiver holds one).
    concurrency: int = 8


@dataclass
class HooksConfig:
    # Blocking pre-create hook: POSTed before every upload is created; empty = none.
    pre_create_url: str = ""
    # Seconds to wait for its answer; no answer in time (or no hook): 503.
    timeout: float = 5.0
    # Request headers passed on to the hook (case-insensitive).
    forward_headers: list[str] = field(default_factory=lambda: ["Authorization", "Cookie"])


@dataclass
class PageConfig:
    # What the browser page accepts before it uploads anything (a convenience
    # for people, not a server-side check). Empty / 0: no restriction.
    # MIME types ("image/png"), families ("image/*") or extensions (".pdf").
    allowed_types: list[str] = field(default_factory=list)
    max_files: int = 0           # files in one page at a time
    max_total_size: int = 0      # bytes of all files in one page together
    # Workers that hash chunks for their MD5s side by side (one more keeps the
    # whole-file MD5 in order): more than the client's cores only adds memory.
    hash_workers: int = 2


@dataclass
class LinksConfig:
    """Signed download links (GET /upload/{id}/link, docs/security.md)."""

    # HMAC key of every link (at least 32 characters). Instances behind one
    # load balancer need the same one. Empty: a random key per process, so a
    # link opens only on the instance that made it, until it restarts.
    secret: str = field(default="", repr=False)  # kept out of logs
    # Seconds a link stays valid (also the most a client may ask for).
    expiry: int = 300


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    s3: S3Config = field(default_factory=S3Config)
    store: StoreConfig = field(default_factory=StoreConfig)
    locks: LocksConfig = field(default_factory=LocksConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    expiry: ExpiryConfig = field(default_factory=ExpiryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    auth: AuthConfig = field(default_factory=AuthConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    connections: ConnectionsConfig = field(default_factory=ConnectionsConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    page: PageConfig = field(default_factory=PageConfig)
    links: LinksConfig = field(default_factory=LinksConfig)

    events: EventsConfig = field(default_factory=EventsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir).resolve()

    @property
    def sqlite_path(self) -> Path:
        return Path(self.store.sqlite_path).resolve() if self.store.sqlite_path \
            else self.data_dir / "uploader.db"
