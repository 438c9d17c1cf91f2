-- Recap schema version 2: scheduled digests. Times are integer ms since the epoch (UTC).
-- The scheduler reads next_run_at from here, so schedules survive restarts.

CREATE TABLE digests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: /digest remove by id stays unambiguous
    guild_id    INTEGER NOT NULL,
    source_id   INTEGER NOT NULL,                   -- channel or thread summarized
    target_id   INTEGER NOT NULL,                   -- channel posted in
    owner_id    INTEGER NOT NULL,                   -- who set it up; told by DM when a run is skipped
    every       TEXT    NOT NULL CHECK (every IN ('daily', 'weekly')),
    at_time     TEXT    NOT NULL CHECK (length(at_time) = 5 AND substr(at_time, 3, 1) = ':'),  -- local HH:MM
    timezone    TEXT    NOT NULL,                   -- IANA name
    weekday     INTEGER CHECK (weekday BETWEEN 0 AND 6),  -- 0 = Monday; weekly only
    length      TEXT    NOT NULL,
    style       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    next_run_at INTEGER NOT NULL,
    last_run_at INTEGER,                            -- the end of the last window summarized (or skipped)
    last_status TEXT,                               -- what the last run did, for /digest list
    CHECK ((every = 'weekly') = (weekday IS NOT NULL))
);
CREATE INDEX digests_next_run ON digests (next_run_at);
CREATE INDEX digests_guild    ON digests (guild_id);
CREATE INDEX digests_source   ON digests (source_id);
CREATE INDEX digests_target   ON digests (target_id);
