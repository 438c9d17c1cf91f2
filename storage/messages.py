"""Message history: upserts that skip opted-out authors, channel queries, and every delete path.

Rows are keyed by the Discord message id; ids are snowflakes, so ``ORDER BY id`` is time order.
Every delete also deletes the summaries built from the deleted messages, in the same transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence


from .connection import Connection, is_postgres
from .convert import (
    EPOCH,
    ESCAPED,
    MAX_ID,
    ONE_MS,
    check_id,
    check_text,
    opt_id,
    opt_ms,
    text_in,
    text_out,
    to_ms,
)
from .errors import StorageError

MAX_CONTENT_CHARS = 1_000_000
MAX_NAME_CHARS = 1_000
MAX_ATTACHMENT_TEXT_CHARS = 1_000_000


@dataclass(slots=True)
class StoredAttachment:
    filename: str
    size: int
    content_type: str | None = None
    text: str | None = None  # extracted text of a text attachment


@dataclass(slots=True)
class StoredMessage:
    id: int
    guild_id: int
    channel_id: int
    author_id: int
    author_name: str
    content: str
    created_at: datetime
    parent_id: int | None = None  # the parent channel when channel_id is a thread
    edited_at: datetime | None = None
    reply_to: int | None = None
    is_bot: bool = False
    attachments: list[StoredAttachment] = field(default_factory=list)


@dataclass(frozen=True)
class DeleteResult:
    messages: int
    summaries: int


_COLUMNS = (
    "id, guild_id, channel_id, parent_id, author_id, author_name, content, "
    "created_at, edited_at, reply_to, is_bot, attachments"
)
# Column positions in a row tuple, used by the buffer to patch buffered rows.
ID, GUILD_ID, CHANNEL_ID, AUTHOR_ID, CONTENT, EDITED_AT, ATTACHMENTS = 0, 1, 2, 4, 6, 8, 11

_UPSERT = f"""INSERT INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    author_name = excluded.author_name,
    content     = excluded.content,
    edited_at   = coalesce(excluded.edited_at, messages.edited_at),
    reply_to    = coalesce(excluded.reply_to, messages.reply_to),
    parent_id   = coalesce(excluded.parent_id, messages.parent_id),
    is_bot      = excluded.is_bot,
    attachments = excluded.attachments
"""

Row = tuple[Any, ...]


def attachments_in(attachments: Sequence[StoredAttachment] | None, message_id: int) -> str | bytes | None:
    if not attachments:
        return None
    items = []
    for a in attachments:
        if not isinstance(a, StoredAttachment):
            raise StorageError(f"Message {message_id}: attachments must be StoredAttachment, not {type(a).__name__}.")
        if type(a.size) is not int or a.size < 0:
            raise StorageError(f"Message {message_id}: attachment size must be a whole number of bytes, not {a.size!r}.")
        item: dict[str, Any] = {"filename": check_text(a.filename, f"Message {message_id}: attachment name", MAX_NAME_CHARS), "size": a.size}
        if a.content_type is not None:
            item["content_type"] = check_text(a.content_type, f"Message {message_id}: attachment type", MAX_NAME_CHARS)
        if a.text is not None:
            item["text"] = check_text(a.text, f"Message {message_id}: attachment text", MAX_ATTACHMENT_TEXT_CHARS)
        items.append(item)
    # ensure_ascii=False keeps non-Latin text compact; text_in handles lone surrogates.
    return text_in(json.dumps(items, ensure_ascii=False, separators=(",", ":")))


def attachments_out(value: str | bytes | None) -> list[StoredAttachment]:
    if value is None:
        return []
    return [StoredAttachment(**item) for item in json.loads(text_out(value))]


def _is_id(v: Any) -> bool:
    return type(v) is int and 0 < v <= MAX_ID


def _utc_ms(v: Any) -> int | None:
    """Milliseconds for a datetime in UTC, else None (the checked path then explains the problem)."""
    if type(v) is datetime and v.tzinfo is timezone.utc:
        return (v - EPOCH) // ONE_MS
    return None


def message_row(m: StoredMessage) -> Row:
    """The validated SQLite row for ``m``; raises StorageError naming what is wrong.

    The common case is checked inline without building error text (ingest runs this per message);
    anything unusual goes through the fully checked path.
    """
    if type(m) is StoredMessage:
        mid, gid, cid, aid, name, content = m.id, m.guild_id, m.channel_id, m.author_id, m.author_name, m.content
        parent, reply, edited = m.parent_id, m.reply_to, m.edited_at
        created_ms = _utc_ms(m.created_at)
        edited_ms = None if edited is None else _utc_ms(edited)
        if (
            _is_id(mid) and _is_id(gid) and _is_id(cid) and _is_id(aid)
            and type(name) is str and len(name) <= MAX_NAME_CHARS
            and type(content) is str and len(content) <= MAX_CONTENT_CHARS
            and created_ms is not None and (edited is None or edited_ms is not None)
            and (parent is None or _is_id(parent)) and (reply is None or _is_id(reply))
        ):
            attachments = attachments_in(m.attachments, mid) if m.attachments else None
            return (mid, gid, cid, parent, aid, text_in(name), text_in(content), created_ms, edited_ms, reply,
                    1 if m.is_bot else 0, attachments)
    return _checked_row(m)


def _checked_row(m: StoredMessage) -> Row:
    if not isinstance(m, StoredMessage):
        raise StorageError(f"Expected a StoredMessage, not {type(m).__name__}.")
    mid = check_id(m.id, "message id")
    what = f"Message {mid}:"
    return (
        mid,
        check_id(m.guild_id, f"{what} guild id"),
        check_id(m.channel_id, f"{what} channel id"),
        opt_id(m.parent_id, f"{what} parent channel id"),
        check_id(m.author_id, f"{what} author id"),
        text_in(check_text(m.author_name, f"{what} author name", MAX_NAME_CHARS)),
        text_in(check_text(m.content, f"{what} content", MAX_CONTENT_CHARS)),
        to_ms(m.created_at, f"{what} created_at"),
        opt_ms(m.edited_at, f"{what} edited_at"),
        opt_id(m.reply_to, f"{what} reply-to id"),
        1 if m.is_bot else 0,
        attachments_in(m.attachments, mid),
    )


def _from_row(r: Sequence[Any]) -> StoredMessage:
    # Positional construction: this runs for every message a summary reads.
    name, content, edited, attachments = r[5], r[6], r[8], r[11]
    return StoredMessage(
        r[0], r[1], r[2], r[4],
        name if type(name) is str and name[:1] != ESCAPED else text_out(name),  # type: ignore[arg-type]
        content if type(content) is str and content[:1] != ESCAPED else text_out(content),  # type: ignore[arg-type]
        EPOCH + r[7] * ONE_MS,
        r[3],
        None if edited is None else EPOCH + edited * ONE_MS,
        r[9],
        bool(r[10]),
        [] if attachments is None else attachments_out(attachments),
    )


def _id_list(ids: Iterable[int], what: str = "message id") -> str:
    return json.dumps([check_id(i, what) for i in ids])


async def write_rows(conn: Connection, rows: Sequence[Row]) -> int:
    """Upsert already-validated rows, leaving out authors who opted out (checked in this transaction)."""
    if not rows:
        return 0
    authors = {r[AUTHOR_ID] for r in rows}
    opted = await conn.execute_fetchall(
        "SELECT user_id FROM opt_outs WHERE user_id IN (SELECT value FROM json_each(?))", (json.dumps(list(authors)),)
    )
    if opted:
        blocked = {r[0] for r in opted}
        rows = [r for r in rows if r[AUTHOR_ID] not in blocked]
        if not rows:
            return 0
    pairs = {(r[AUTHOR_ID], r[CHANNEL_ID], r[GUILD_ID]) for r in rows}
    if is_postgres(conn):
        await _write_rows_postgres(conn, rows, pairs)
        return len(rows)
    await conn.executemany(_UPSERT, rows)
    # Existing pairs are only read, not rewritten, so this costs little per batch.
    await conn.executemany(
        "INSERT INTO message_authors (author_id, channel_id, guild_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", pairs)
    return len(rows)


# PostgreSQL: new messages go in with COPY (about three times the rate of INSERT ... SELECT on this
# project's machine); the few already stored (edits, re-reads) through one upsert over column arrays.
# Nothing can insert the same ids in between: every write transaction holds the advisory write lock.
_PG_EXISTING = "SELECT id FROM messages WHERE id = ANY($1::bigint[])"
_PG_UPSERT = (
    f"INSERT INTO messages ({_COLUMNS}) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], "
    "$4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::integer[], "
    "$12::text[]) " + _UPSERT[_UPSERT.index("ON CONFLICT"):]
)
# The author pairs already known, so only new ones are written (most are known; an upsert of each
# pair cost as much as the COPY of the messages).
_PG_KNOWN_PAIRS = ("SELECT a.author_id, a.channel_id FROM message_authors AS a "
                   "JOIN unnest($1::bigint[], $2::bigint[]) AS p (author_id, channel_id) USING (author_id, channel_id)")
_COLUMN_NAMES = tuple(_COLUMNS.split(", "))


async def _write_rows_postgres(conn: Any, rows: Sequence[Row], pairs: set[tuple[int, int, int]]) -> None:
    latest = {r[ID]: r for r in rows}  # one statement may not write a row twice: the last version wins
    stored = {r[0] for r in await conn.execute_fetchall(_PG_EXISTING, [list(latest)])}
    new = [r for mid, r in latest.items() if mid not in stored]
    if new:
        await conn.copy_rows("messages", _COLUMN_NAMES, new)
    if stored:
        await conn.execute(_PG_UPSERT, [list(column) for column in zip(*(latest[m] for m in stored))])
    authors, channels, _ = zip(*pairs)
    known = {(r[0], r[1]) for r in await conn.execute_fetchall(_PG_KNOWN_PAIRS, [list(authors), list(channels)])}
    missing = [p for p in pairs if (p[0], p[1]) not in known]
    if missing:
        await conn.copy_rows("message_authors", ("author_id", "channel_id", "guild_id"), missing)


async def upsert_messages(conn: Connection, msgs: Iterable[StoredMessage]) -> int:
    """Insert new messages and update known ones (an edit). Returns rows written (opted-out authors skipped)."""
    rows = [message_row(m) for m in msgs]  # validate everything before writing anything
    return await write_rows(conn, rows)


async def edit_message(
    conn: Connection,
    message_id: int,
    content: str,
    edited_at: datetime,
    attachments: list[StoredAttachment] | None = None,
) -> bool:
    """Change a stored message's content (and attachments when given). False when it is not stored."""
    mid = check_id(message_id, "message id")
    params: list[Any] = [text_in(check_text(content, f"Message {mid}: content", MAX_CONTENT_CHARS)), to_ms(edited_at, "edited_at")]
    sql = "UPDATE messages SET content = ?, edited_at = ?"
    if attachments is not None:
        sql += ", attachments = ?"
        params.append(attachments_in(attachments, mid))
    cur = await conn.execute(sql + " WHERE id = ?", (*params, mid))
    return cur.rowcount > 0


async def get_message(conn: Connection, message_id: int) -> StoredMessage | None:
    rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (check_id(message_id, "message id"),))
    return _from_row(rows[0]) if rows else None


async def _select(
    conn: Connection,
    channel_id: int,
    where: str,
    params: list[Any],
    limit: int | None,
    exclude_authors: Iterable[int],
) -> list[StoredMessage]:
    sql = f"SELECT {_COLUMNS} FROM messages WHERE channel_id = ?{where}"
    args: list[Any] = [check_id(channel_id, "channel id"), *params]
    excluded = [check_id(a, "author id") for a in exclude_authors]
    if excluded:
        sql += " AND author_id NOT IN (SELECT value FROM json_each(?))"
        args.append(json.dumps(excluded))
    sql += " ORDER BY id DESC"
    if limit is not None:
        if type(limit) is not int or limit < 0:
            raise StorageError(f"limit must be a whole number 0 or more, not {limit!r}.")
        sql += " LIMIT ?"
        args.append(limit)
    rows = await conn.execute_fetchall(sql, args)
    return [_from_row(r) for r in reversed(rows)]


async def last_messages(
    conn: Connection, channel_id: int, limit: int, *, exclude_authors: Iterable[int] = ()
) -> list[StoredMessage]:
    """The newest ``limit`` messages of a channel, oldest first."""
    return await _select(conn, channel_id, "", [], limit, exclude_authors)


async def messages_since(
    conn: Connection,
    channel_id: int,
    since: datetime,
    *,
    limit: int | None = None,
    exclude_authors: Iterable[int] = (),
) -> list[StoredMessage]:
    """Messages created at or after ``since``, oldest first (the newest ``limit`` when given)."""
    return await _select(conn, channel_id, " AND created_at >= ?", [to_ms(since, "since")], limit, exclude_authors)


async def messages_after(
    conn: Connection,
    channel_id: int,
    after_id: int,
    *,
    limit: int | None = None,
    exclude_authors: Iterable[int] = (),
) -> list[StoredMessage]:
    """Messages with an id greater than ``after_id``, oldest first."""
    return await _select(conn, channel_id, " AND id > ?", [check_id(after_id, "after id")], limit, exclude_authors)


async def messages_between(
    conn: Connection,
    channel_id: int,
    first_id: int,
    last_id: int,
    *,
    limit: int | None = None,
    exclude_authors: Iterable[int] = (),
) -> list[StoredMessage]:
    """Messages from ``first_id`` to ``last_id`` inclusive (either order), oldest first."""
    lo, hi = sorted((check_id(first_id, "first id"), check_id(last_id, "last id")))
    return await _select(conn, channel_id, " AND id BETWEEN ? AND ?", [lo, hi], limit, exclude_authors)


async def count_messages(conn: Connection, *, guild_id: int | None = None, channel_id: int | None = None) -> int:
    sql, args = "SELECT count(*) FROM messages WHERE TRUE", []
    if guild_id is not None:
        sql += " AND guild_id = ?"
        args.append(check_id(guild_id, "guild id"))
    if channel_id is not None:
        sql += " AND channel_id = ?"
        args.append(check_id(channel_id, "channel id"))
    rows = await conn.execute_fetchall(sql, args)
    return int(rows[0][0])


async def channel_message_counts(conn: Connection, guild_id: int) -> dict[int, int]:
    rows = await conn.execute_fetchall(
        "SELECT channel_id, count(*) FROM messages WHERE guild_id = ? GROUP BY channel_id", (check_id(guild_id, "guild id"),)
    )
    return {r[0]: r[1] for r in rows}


async def delete_where(conn: Connection, where: str, args: Sequence[Any], extra_summaries: str = "") -> DeleteResult:
    """Delete the messages matching ``where`` and every summary built from them.

    Summaries go first, found through summary_sources, so the count is exact; the trigger on
    messages is the safety net for any other path.
    """
    summaries = await conn.execute(
        "DELETE FROM summaries WHERE id IN (SELECT s.summary_id FROM summary_sources s "
        f"WHERE s.message_id IN (SELECT id FROM messages WHERE {where})){extra_summaries}",
        args,
    )
    n_summaries = summaries.rowcount
    cur = await conn.execute(f"DELETE FROM messages WHERE {where}", args[: where.count("?")])
    return DeleteResult(messages=cur.rowcount, summaries=n_summaries)


async def delete_messages(conn: Connection, ids: Iterable[int] | int) -> DeleteResult:
    """Delete messages by id (one or many), with their summaries, including summaries of never-stored ids."""
    id_json = _id_list([ids] if isinstance(ids, int) else ids)
    summaries = await conn.execute(
        "DELETE FROM summaries WHERE id IN "
        "(SELECT summary_id FROM summary_sources WHERE message_id IN (SELECT value FROM json_each(?)))",
        (id_json,),
    )
    cur = await conn.execute("DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))", (id_json,))
    return DeleteResult(messages=cur.rowcount, summaries=summaries.rowcount)


async def delete_missing(
    conn: Connection, channel_id: int, after_id: int, upto_id: int, present: Iterable[int]
) -> tuple[DeleteResult, list[int]]:
    """A range Discord was just read for is the truth: delete the channel's stored messages with an id in
    ``(after_id, upto_id]`` that are not in ``present`` (deleted while nobody listened), with their summaries.

    Returns the delete counts and the ids deleted.
    """
    cid = check_id(channel_id, "channel id")
    rows = await conn.execute_fetchall(
        "SELECT id FROM messages WHERE channel_id = ? AND id > ? AND id <= ? "
        "AND id NOT IN (SELECT value FROM json_each(?))",
        (cid, int(after_id), int(upto_id), _id_list(present)),
    )
    gone = [r[0] for r in rows]
    if not gone:
        return DeleteResult(0, 0), []
    return await delete_messages(conn, gone), gone


async def delete_author_messages(conn: Connection, author_id: int, *, guild_id: int | None = None) -> DeleteResult:
    """Every stored message by one author (in one server when ``guild_id`` is given)."""
    aid = check_id(author_id, "author id")
    # Through the channels they posted in (message_authors), so the channel index does the work.
    where = "author_id = ? AND channel_id IN (SELECT channel_id FROM message_authors WHERE author_id = ?{})"
    if guild_id is None:
        result = await delete_where(conn, where.format(""), (aid, aid))
        await conn.execute("DELETE FROM message_authors WHERE author_id = ?", (aid,))
    else:
        gid = check_id(guild_id, "guild id")
        result = await delete_where(conn, where.format(" AND guild_id = ?"), (aid, aid, gid))
        await conn.execute("DELETE FROM message_authors WHERE author_id = ? AND guild_id = ?", (aid, gid))
    return result
