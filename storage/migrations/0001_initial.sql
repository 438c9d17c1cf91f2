-- Recap schema version 1: message history, summaries (with their source messages),
-- per-server/per-channel settings and per-user opt-outs. Times are integer ms since the epoch (UTC).

CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,      -- Discord snowflake: id order is time order
    guild_id    INTEGER NOT NULL,
    channel_id  INTEGER NOT NULL,         -- a thread's own id for thread messages
    parent_id   INTEGER,                  -- the thread's parent channel; NULL outside threads
    author_id   INTEGER NOT NULL,
    author_name TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    edited_at   INTEGER,
    reply_to    INTEGER,
    is_bot      INTEGER NOT NULL DEFAULT 0,
    attachments TEXT                      -- JSON list of {filename, size, content_type, text}; NULL when none
);
CREATE INDEX messages_channel ON messages (channel_id, id);
CREATE INDEX messages_guild   ON messages (guild_id, created_at);
CREATE INDEX messages_parent  ON messages (parent_id) WHERE parent_id IS NOT NULL;

-- Who has posted in which channel. An author's messages are found through this and the
-- channel index; a per-message author index would touch a random page on every insert,
-- halving the ingest rate. Rows may outlive the messages (harmless: it is only a hint).
CREATE TABLE message_authors (
    author_id  INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    guild_id   INTEGER NOT NULL,
    PRIMARY KEY (author_id, channel_id)
) WITHOUT ROWID;

-- AUTOINCREMENT: a deleted summary's id is never handed out again.
CREATE TABLE summaries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id     INTEGER NOT NULL,
    channel_id   INTEGER NOT NULL,
    requester_id INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    length       TEXT    NOT NULL,
    style        TEXT    NOT NULL,
    private      INTEGER NOT NULL DEFAULT 0,
    settings     TEXT    NOT NULL DEFAULT '{}',   -- JSON: the generation settings used
    text         TEXT    NOT NULL,
    structured   TEXT,                            -- JSON: citations, topics, participants, ...
    start_id     INTEGER,
    end_id       INTEGER,
    start_at     INTEGER,
    end_at       INTEGER
);
CREATE INDEX summaries_channel   ON summaries (channel_id, created_at);
CREATE INDEX summaries_guild     ON summaries (guild_id, created_at);
CREATE INDEX summaries_requester ON summaries (requester_id);

-- No foreign key to messages: a summary may read messages that were never stored here.
CREATE TABLE summary_sources (
    summary_id INTEGER NOT NULL REFERENCES summaries (id) ON DELETE CASCADE,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (summary_id, message_id)
) WITHOUT ROWID;
CREATE INDEX summary_sources_message ON summary_sources (message_id);

-- Whatever deletes a stored message (by id, channel, guild, author, retention) also deletes
-- every summary built from it. Deletes of never-stored ids are handled in storage.messages.
CREATE TRIGGER messages_delete_summaries AFTER DELETE ON messages
BEGIN
    DELETE FROM summaries WHERE id IN (SELECT summary_id FROM summary_sources WHERE message_id = OLD.id);
END;

-- channel_id 0 is the server-wide value. value is JSON.
CREATE TABLE settings (
    guild_id   INTEGER NOT NULL,
    channel_id INTEGER NOT NULL DEFAULT 0,
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (guild_id, channel_id, name)
) WITHOUT ROWID;

-- Global across servers: an opted-out user's messages are never stored.
CREATE TABLE opt_outs (
    user_id      INTEGER PRIMARY KEY,
    opted_out_at INTEGER NOT NULL
);
