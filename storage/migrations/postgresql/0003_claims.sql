-- Recap schema version 3 in PostgreSQL: claims (see the SQLite file's 0003_claims.sql).

ALTER TABLE digests ADD COLUMN claimed_by TEXT;
ALTER TABLE digests ADD COLUMN claimed_until BIGINT;

CREATE TABLE leases (
    name       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
