"""Ordered schema steps shared by the SQL stores (docs/architecture.md: schema).

Each step is a list of statements per dialect; ``schema_version`` records the
last step applied. Append steps, never edit a released one.
"""

from __future__ import annotations

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
]

# Columns in the order every SELECT of an upload row uses.
UPLOAD_COLUMNS = ("upload_id, owner, filename, total_size, chunk_size, total_chunks, md5, "
                  "status, merge_version, storage_key, last_error, created_at, updated_at, "
                  "backend_state, tus")
