"""Ordered schema steps shared by the SQL stores (docs/architecture.md: schema).

Each step is a list of statements per dialect; ``schema_version`` records the
last step applied. Append steps, never edit a released one.
"""

from __future__ import annotations

# The statements of one counter change: ``row`` (NEW or OLD) enters (+) or
# leaves (-) its status's count ('s') and, while active, its owner's ('o').
# Upserts, so a new owner or status gets its row. MySQL locks counter rows in
# one order everywhere (status rows by name, then owner rows): a merge going
# failed -> merging and another going merging -> failed cannot deadlock.
ACTIVE = "('in_progress', 'merging')"
STATUSES = ("in_progress", "merging", "completed", "failed", "aborted")
_MY_STATUS = ("INSERT INTO upload_counts (kind, name, uploads, bytes) "
              "VALUES ('s', {row}.status, {sign}1, {sign}{row}.total_size) "
              "ON DUPLICATE KEY UPDATE uploads = uploads {sign} 1, "
              "bytes = bytes {sign} {row}.total_size;")
_MY_OWNER = ("IF {row}.status IN " + ACTIVE + " THEN "
             "INSERT INTO upload_counts (kind, name, uploads, bytes) "
             "VALUES ('o', {row}.owner, {sign}1, {sign}{row}.total_size) "
             "ON DUPLICATE KEY UPDATE uploads = uploads {sign} 1, "
             "bytes = bytes {sign} {row}.total_size; END IF;")
_MY_ADD = _MY_STATUS + " " + _MY_OWNER
_MY_MOVE = ("IF OLD.status <= NEW.status THEN "
            + _MY_STATUS.format(row="OLD", sign="-") + " "
            + _MY_STATUS.format(row="NEW", sign="+") + " ELSE "
            + _MY_STATUS.format(row="NEW", sign="+") + " "
            + _MY_STATUS.format(row="OLD", sign="-") + " END IF; "
            + _MY_OWNER.format(row="OLD", sign="-") + " "
            + _MY_OWNER.format(row="NEW", sign="+"))
_LITE_ADD = (
    "INSERT INTO upload_counts (kind, name, uploads, bytes) "
    "VALUES ('s', {row}.status, {sign}1, {sign}{row}.total_size) "
    "ON CONFLICT (kind, name) DO UPDATE SET uploads = uploads {sign} 1, "
    "bytes = bytes {sign} {row}.total_size; "
    "INSERT INTO upload_counts (kind, name, uploads, bytes) "
    "SELECT 'o', {row}.owner, {sign}1, {sign}{row}.total_size WHERE {row}.status IN " + ACTIVE
    + " ON CONFLICT (kind, name) DO UPDATE SET uploads = uploads {sign} 1, "
    "bytes = bytes {sign} {row}.total_size;")
# Both dialects: the counters from the rows themselves. Every status has its
# row from the start (a first upsert of a new key is where InnoDB's gap locks
# deadlock concurrent inserts).
_RECOUNT = [
    "DELETE FROM upload_counts",
    "INSERT INTO upload_counts (kind, name, uploads, bytes) VALUES "
    + ", ".join(f"('s', '{status}', 0, 0)" for status in STATUSES),
    "UPDATE upload_counts SET "
    "uploads = (SELECT COUNT(*) FROM uploads WHERE status = upload_counts.name), "
    "bytes = (SELECT COALESCE(SUM(total_size), 0) FROM uploads "
    "WHERE status = upload_counts.name) WHERE kind = 's'",
    "INSERT INTO upload_counts (kind, name, uploads, bytes) "
    "SELECT 'o', owner, COUNT(*), COALESCE(SUM(total_size), 0) FROM uploads "
    "WHERE status IN " + ACTIVE + " GROUP BY owner",
]

MYSQL_STEPS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS uploads (
          upload_id     CHAR(32)     NOT NULL PRIMARY KEY,
          owner         VARCHAR(64)  NOT NULL,
          filename      VARCHAR(255) NOT NULL,
          total_size    BIGINT       NOT NULL,
          chunk_size    INT          NOT NULL,
          total_chunks  INT          NOT NULL,
          md5           CHAR(32)     NULL,
          status        VARCHAR(16)  NOT NULL,
          merge_version INT          NOT NULL DEFAULT 0,
          storage_key   VARCHAR(512) NULL,
          last_error    TEXT         NULL,
          created_at    DATETIME(6)  NOT NULL,
          updated_at    DATETIME(6)  NOT NULL,
          KEY uploads_status_updated (status, updated_at),
          KEY uploads_owner_status (owner, status)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS upload_chunks (
          upload_id   CHAR(32)    NOT NULL,
          chunk_index INT         NOT NULL,
          size        INT         NOT NULL,
          md5         CHAR(32)    NOT NULL,
          received_at DATETIME(6) NOT NULL,
          PRIMARY KEY (upload_id, chunk_index)
        ) ENGINE=InnoDB DEFAULT CHARSET=ascii""",
    ],
    # 2: what a storage backend must remember of an upload from init on
    # (the S3 multipart UploadId), as JSON.
    # Plain ADD COLUMN: MySQL 8 has no IF NOT EXISTS here (MariaDB has).
    ["ALTER TABLE uploads ADD COLUMN backend_state TEXT NULL"],
    # 3 is SQLite's received_at index; InnoDB's clustered primary key already
    # keeps an upload's chunk rows together. Empty keeps versions aligned.
    [],
    # 4: the tus endpoint's state of an upload (models.TusState) as JSON.
    ["ALTER TABLE uploads ADD COLUMN tus TEXT NULL"],
    # 5: client metadata. The JSON column is what reads return; the side table
    # indexes it for GET /uploads?metadata.<key>=<value> (metadata never
    # changes after init, so the two cannot drift). A prefix of the value is
    # indexed; the query rechecks it byte for byte.
    [
        "ALTER TABLE uploads ADD COLUMN metadata TEXT NULL",
        """CREATE TABLE IF NOT EXISTS upload_metadata (
          upload_id CHAR(32)      NOT NULL,
          owner     VARCHAR(64)   NOT NULL,
          name      VARCHAR(64)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
          value     VARCHAR(2048) NOT NULL,
          PRIMARY KEY (upload_id, name),
          KEY upload_metadata_lookup (owner, name, value(191))
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ],
    # 6: the events outbox (written in the transaction of the change it
    # reports) and one delivery row per event and webhook endpoint.
    [
        """CREATE TABLE IF NOT EXISTS events (
          seq           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
          event_id      CHAR(36)     NOT NULL,
          type          VARCHAR(32)  NOT NULL,
          upload_id     CHAR(32)     NOT NULL,
          occurred_at   DATETIME(6)  NOT NULL,
          payload       MEDIUMTEXT   NOT NULL,
          dispatched_at DATETIME(6)  NULL,
          claim_token   CHAR(32)     NULL,
          claim_until   DATETIME(6)  NULL,
          UNIQUE KEY events_event_id (event_id),
          KEY events_pending (dispatched_at, seq),
          KEY events_upload (upload_id, seq)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS event_deliveries (
          seq             BIGINT       NOT NULL,
          sink            VARCHAR(64)  NOT NULL,
          state           VARCHAR(16)  NOT NULL,
          attempts        INT          NOT NULL DEFAULT 0,
          next_attempt_at DATETIME(6)  NOT NULL,
          claim_token     CHAR(32)     NULL,
          claim_until     DATETIME(6)  NULL,
          last_error      VARCHAR(512) NULL,
          finished_at     DATETIME(6)  NULL,
          PRIMARY KEY (seq, sink),
          KEY event_deliveries_due (state, next_attempt_at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ],
    # 7: GET /uploads pages newest first by (created_at, upload_id) from a
    # cursor: an index range per owner (and per owner and status), so a page
    # costs the same whatever the number of rows before it.
    [
        "CREATE INDEX uploads_owner_created ON uploads (owner, created_at, upload_id)",
        "CREATE INDEX uploads_owner_status_created ON uploads "
        "(owner, status, created_at, upload_id)",
    ],
    # 8: counters kept by triggers in the transaction of every row change, so
    # the quota and the metrics read one row instead of counting uploads:
    # kind 'o' = an owner's active (in_progress, merging) uploads and their
    # bytes, kind 's' = every upload in one status. Triggers, not code: every
    # path that inserts, updates or deletes an upload row (the sweep and
    # anything added later) keeps them exact. DROP + CREATE because MySQL 8
    # before 8.0.29 has no CREATE TRIGGER IF NOT EXISTS; the closing
    # recount makes a re-run (or rows written before the triggers) exact.
    [
        """CREATE TABLE IF NOT EXISTS upload_counts (
          kind    CHAR(1)     CHARACTER SET ascii NOT NULL,
          name    VARCHAR(64) NOT NULL,
          uploads BIGINT      NOT NULL,
          bytes   BIGINT      NOT NULL,
          PRIMARY KEY (kind, name)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        "DROP TRIGGER IF EXISTS uploads_count_insert",
        f"""CREATE TRIGGER uploads_count_insert AFTER INSERT ON uploads FOR EACH ROW BEGIN
          {_MY_ADD.format(row="NEW", sign="+")}
        END""",
        "DROP TRIGGER IF EXISTS uploads_count_delete",
        f"""CREATE TRIGGER uploads_count_delete AFTER DELETE ON uploads FOR EACH ROW BEGIN
          {_MY_ADD.format(row="OLD", sign="-")}
        END""",
        "DROP TRIGGER IF EXISTS uploads_count_update",
        f"""CREATE TRIGGER uploads_count_update AFTER UPDATE ON uploads FOR EACH ROW BEGIN
          IF NOT (OLD.status <=> NEW.status AND OLD.total_size <=> NEW.total_size
                  AND OLD.owner <=> NEW.owner) THEN
            {_MY_MOVE}
          END IF;
        END""",
        *_RECOUNT,
    ],
    # 9: direct uploads verified by parts (s3.direct_verify: parts). The MD5
    # each part's URL was signed for (the latest signing of an index wins),
    # and how a completed upload was verified ('parts': md5 then holds the
    # client's claim, never checked; NULL: the server hashed the whole file).
    [
        "ALTER TABLE uploads ADD COLUMN verified VARCHAR(16) NULL",
        """CREATE TABLE IF NOT EXISTS signed_parts (
          upload_id   CHAR(32) NOT NULL,
          chunk_index INT      NOT NULL,
          md5         CHAR(32) NOT NULL,
          PRIMARY KEY (upload_id, chunk_index)
        ) ENGINE=InnoDB DEFAULT CHARSET=ascii""",
    ],
]

SQLITE_STEPS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS uploads (
          upload_id     TEXT    NOT NULL PRIMARY KEY,
          owner         TEXT    NOT NULL,
          filename      TEXT    NOT NULL,
          total_size    INTEGER NOT NULL,
          chunk_size    INTEGER NOT NULL,
          total_chunks  INTEGER NOT NULL,
          md5           TEXT    NULL,
          status        TEXT    NOT NULL,
          merge_version INTEGER NOT NULL DEFAULT 0,
          storage_key   TEXT    NULL,
          last_error    TEXT    NULL,
          created_at    TEXT    NOT NULL,
          updated_at    TEXT    NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS uploads_status_updated ON uploads (status, updated_at)",
        "CREATE INDEX IF NOT EXISTS uploads_owner_status ON uploads (owner, status)",
        """CREATE TABLE IF NOT EXISTS upload_chunks (
          upload_id   TEXT    NOT NULL,
          chunk_index INTEGER NOT NULL,
          size        INTEGER NOT NULL,
          md5         TEXT    NOT NULL,
          received_at TEXT    NOT NULL,
          PRIMARY KEY (upload_id, chunk_index)
        )""",
    ],
    ["ALTER TABLE uploads ADD COLUMN backend_state TEXT NULL"],
    [
        # status reads MAX(received_at) of an upload: without this index it
        # visits every chunk row (10,000 row lookups for a large upload).
        "CREATE INDEX IF NOT EXISTS upload_chunks_received ON upload_chunks "
        "(upload_id, received_at)",
    ],
    ["ALTER TABLE uploads ADD COLUMN tus TEXT NULL"],
    # 5: client metadata (see MYSQL_STEPS 5).
    [
        "ALTER TABLE uploads ADD COLUMN metadata TEXT NULL",
        """CREATE TABLE IF NOT EXISTS upload_metadata (
          upload_id TEXT NOT NULL,
          owner     TEXT NOT NULL,
          name      TEXT NOT NULL,
          value     TEXT NOT NULL,
          PRIMARY KEY (upload_id, name)
        )""",
        "CREATE INDEX IF NOT EXISTS upload_metadata_lookup ON upload_metadata "
        "(owner, name, value)",
    ],
    # 6: the events outbox (see MYSQL_STEPS 6).
    [
        """CREATE TABLE IF NOT EXISTS events (
          seq           INTEGER PRIMARY KEY AUTOINCREMENT,
          event_id      TEXT    NOT NULL UNIQUE,
          type          TEXT    NOT NULL,
          upload_id     TEXT    NOT NULL,
          occurred_at   TEXT    NOT NULL,
          payload       TEXT    NOT NULL,
          dispatched_at TEXT    NULL,
          claim_token   TEXT    NULL,
          claim_until   TEXT    NULL
        )""",
        "CREATE INDEX IF NOT EXISTS events_pending ON events (dispatched_at, seq)",
        "CREATE INDEX IF NOT EXISTS events_upload ON events (upload_id, seq)",
        """CREATE TABLE IF NOT EXISTS event_deliveries (
          seq             INTEGER NOT NULL,
          sink            TEXT    NOT NULL,
          state           TEXT    NOT NULL,
          attempts        INTEGER NOT NULL DEFAULT 0,
          next_attempt_at TEXT    NOT NULL,
          claim_token     TEXT    NULL,
          claim_until     TEXT    NULL,
          last_error      TEXT    NULL,
          finished_at     TEXT    NULL,
          PRIMARY KEY (seq, sink)
        )""",
        "CREATE INDEX IF NOT EXISTS event_deliveries_due ON event_deliveries "
        "(state, next_attempt_at)",
    ],
    # 7: GET /uploads pages (see MYSQL_STEPS 7).
    [
        "CREATE INDEX IF NOT EXISTS uploads_owner_created ON uploads "
        "(owner, created_at, upload_id)",
        "CREATE INDEX IF NOT EXISTS uploads_owner_status_created ON uploads "
        "(owner, status, created_at, upload_id)",
    ],
    # 8: the counters of MYSQL_STEPS 8. SQLite runs a step in one
    # transaction, so the recount and the triggers cannot miss a row.
    [
        """CREATE TABLE IF NOT EXISTS upload_counts (
          kind    TEXT    NOT NULL,
          name    TEXT    NOT NULL,
          uploads INTEGER NOT NULL,
          bytes   INTEGER NOT NULL,
          PRIMARY KEY (kind, name)
        )""",
        f"""CREATE TRIGGER IF NOT EXISTS uploads_count_insert AFTER INSERT ON uploads BEGIN
          {_LITE_ADD.format(row="NEW", sign="+")}
        END""",
        f"""CREATE TRIGGER IF NOT EXISTS uploads_count_delete AFTER DELETE ON uploads BEGIN
          {_LITE_ADD.format(row="OLD", sign="-")}
        END""",
        f"""CREATE TRIGGER IF NOT EXISTS uploads_count_update
          AFTER UPDATE OF status, total_size, owner ON uploads
          WHEN OLD.status IS NOT NEW.status OR OLD.total_size IS NOT NEW.total_size
            OR OLD.owner IS NOT NEW.owner BEGIN
          {_LITE_ADD.format(row="OLD", sign="-")}
          {_LITE_ADD.format(row="NEW", sign="+")}
        END""",
        *_RECOUNT,
    ],
    # 9: see MySQL's step 9.
    [
        "ALTER TABLE uploads ADD COLUMN verified TEXT NULL",
        """CREATE TABLE IF NOT EXISTS signed_parts (
          upload_id   TEXT    NOT NULL,
          chunk_index INTEGER NOT NULL,
          md5         TEXT    NOT NULL,
          PRIMARY KEY (upload_id, chunk_index)
        )""",
    ],
]

# An owner's (active uploads, reserved bytes) from the step 8 counters; a
# row exists once the owner has had an active upload.
OWNER_TOTALS = "SELECT uploads, bytes FROM upload_counts WHERE kind = 'o' AND name = ?"
# Everyone's: the two active statuses' rows.
ALL_TOTALS = ("SELECT COALESCE(SUM(uploads), 0), COALESCE(SUM(bytes), 0) FROM upload_counts "
              "WHERE kind = 's' AND name IN " + ACTIVE)

# Columns in the order every SELECT of an upload row uses.
UPLOAD_COLUMNS = ("upload_id, owner, filename, total_size, chunk_size, total_chunks, md5, "
                  "status, merge_version, storage_key, last_error, created_at, updated_at, "
                  "backend_state, tus, metadata, verified")
