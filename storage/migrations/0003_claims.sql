-- Recap schema version 3: claims, so several bot processes can share one database.
-- A digest is run by the process that claimed it (claimed_until in ms; a crashed process's
-- claim lapses and the run is retried). A lease names one process for a periodic job.

ALTER TABLE digests ADD COLUMN claimed_by TEXT;
ALTER TABLE digests ADD COLUMN claimed_until INTEGER;

CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,  -- the job: 'retention', 'sweep:<shards>'
    holder     TEXT    NOT NULL,     -- the process holding it
    expires_at INTEGER NOT NULL
);
