"""Stored summaries and the message ids each was built from (``summary_sources``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence


from .connection import Connection
from .convert import check_id, check_text, from_ms, opt_id, opt_ms, text_in, text_out, to_ms, utc_now
from .errors import SourcesGone, StorageError

MAX_SUMMARY_CHARS = 1_000_000
MAX_LABEL_CHARS = 64


@dataclass(slots=True)
class SummaryRecord:
    guild_id: int
    channel_id: int
    requester_id: int
    text: str
    length: str
    style: str
    settings: dict[str, Any] = field(default_factory=dict)  # the settings used
    source_ids: list[int] = field(default_factory=list)  # message ids read
    private: bool = False
    structured: dict[str, Any] | None = None  # citations, topics, participants, ...
    start_id: int | None = None
    end_id: int | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    created_at: datetime | None = None  # now, when None at insert
    id: int | None = None


_COLUMNS = (
    "id, guild_id, channel_id, requester_id, created_at, length, style, private, settings, text, "
    "structured, start_id, end_id, start_at, end_at"
)


def _json_in(value: Any, what: str) -> str | bytes:
    try:
        return text_in(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    except (TypeError, ValueError) as exc:
        raise StorageError(f"Summary {what} must be JSON-serializable: {exc}.") from exc


def _json_out(value: str | bytes | None) -> Any:
    return None if value is None else json.loads(text_out(value))  # type: ignore[arg-type]


def _from_row(r: Sequence[Any], source_ids: list[int] | None = None) -> SummaryRecord:
    return SummaryRecord(
        id=r[0],
        guild_id=r[1],
        channel_id=r[2],
        requester_id=r[3],
        created_at=from_ms(r[4]),
        length=r[5],
        style=r[6],
        private=bool(r[7]),
        settings=_json_out(r[8]) or {},
        text=text_out(r[9]) or "",
        structured=_json_out(r[10]),
        start_id=r[11],
        end_id=r[12],
        start_at=from_ms(r[13]),
        end_at=from_ms(r[14]),
        source_ids=source_ids if source_ids is not None else [],
    )


async def insert_summary(conn: Connection, record: SummaryRecord, *, require_sources: bool = False) -> int:
    """Store a summary and its source message ids; returns (and sets) ``record.id``.

    ``require_sources``: every source message must still be stored, checked in this transaction;
    otherwise ``SourcesGone`` is raised and nothing is stored (one was deleted, or its author opted
    out, while the summary was being made: its text must not survive in the summary).
    """
    if not isinstance(record, SummaryRecord):
        raise StorageError(f"Expected a SummaryRecord, not {type(record).__name__}.")
    if not isinstance(record.settings, dict) or not (record.structured is None or isinstance(record.structured, dict)):
        raise StorageError("Summary settings and structured data must be dicts.")
    sources = sorted({check_id(i, "source message id") for i in record.source_ids})
    created_ms = to_ms(record.created_at or utc_now(), "created_at")
    if require_sources and sources:
        rows = await conn.execute_fetchall(
            "SELECT count(*) FROM messages WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(sources),)
        )
        if rows[0][0] < len(sources):
            raise SourcesGone(len(sources) - rows[0][0])
    inserted = await conn.execute_fetchall(
        f"INSERT INTO summaries ({_COLUMNS.removeprefix('id, ')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "RETURNING id",
        (
            check_id(record.guild_id, "guild id"),
            check_id(record.channel_id, "channel id"),
            check_id(record.requester_id, "requester id"),
            created_ms,
            check_text(record.length, "Summary length", MAX_LABEL_CHARS),
            check_text(record.style, "Summary style", MAX_LABEL_CHARS),
            1 if record.private else 0,
            _json_in(record.settings, "settings"),
            text_in(check_text(record.text, "Summary text", MAX_SUMMARY_CHARS)),
            None if record.structured is None else _json_in(record.structured, "structured data"),
            opt_id(record.start_id, "start id"),
            opt_id(record.end_id, "end id"),
            opt_ms(record.start_at, "start_at"),
            opt_ms(record.end_at, "end_at"),
        ),
    )
    summary_id = int(list(inserted)[0][0])
    if sources:
        await conn.executemany(
            "INSERT INTO summary_sources (summary_id, message_id) VALUES (?, ?)", [(summary_id, m) for m in sources]
        )
    record.id = summary_id
    record.created_at = from_ms(created_ms)  # stored to the millisecond
    return summary_id


async def get_summary(conn: Connection, summary_id: int) -> SummaryRecord | None:
    rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM summaries WHERE id = ?", (check_id(summary_id, "summary id"),))
    if not rows:
        return None
    sources = await conn.execute_fetchall(
        "SELECT message_id FROM summary_sources WHERE summary_id = ? ORDER BY message_id", (summary_id,)
    )
    return _from_row(rows[0], [r[0] for r in sources])


def _filters(
    guild_id: int | None, channel_id: int | None, requester_id: int | None, visible_to: int | None = None
) -> tuple[str, list[Any]]:
    sql, args = "", []
    for column, value in (("guild_id", guild_id), ("channel_id", channel_id), ("requester_id", requester_id)):
        if value is not None:
            sql += f" AND {column} = ?"
            args.append(check_id(value, column.replace("_", " ")))
    if visible_to is not None:
        sql += " AND (private = 0 OR requester_id = ?)"
        args.append(check_id(visible_to, "user id"))
    return sql, args


async def list_summaries(
    conn: Connection,
    channel_id: int,
    *,
    requester_id: int | None = None,
    visible_to: int | None = None,
    limit: int = 10,
    offset: int = 0,
) -> list[SummaryRecord]:
    """A channel's summaries, newest first. ``visible_to`` hides other people's private summaries."""
    if type(limit) is not int or type(offset) is not int or limit < 0 or offset < 0:
        raise StorageError(f"limit and offset must be whole numbers 0 or more (got {limit!r}, {offset!r}).")
    where, args = _filters(None, channel_id, requester_id, visible_to)
    rows = await conn.execute_fetchall(
        f"SELECT {_COLUMNS} FROM summaries WHERE TRUE{where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        (*args, limit, offset),
    )
    return [_from_row(r) for r in rows]


async def count_summaries(
    conn: Connection,
    *,
    guild_id: int | None = None,
    channel_id: int | None = None,
    requester_id: int | None = None,
) -> int:
    where, args = _filters(guild_id, channel_id, requester_id)
    rows = await conn.execute_fetchall(f"SELECT count(*) FROM summaries WHERE TRUE{where}", args)
    return int(rows[0][0])


async def delete_summary(conn: Connection, summary_id: int) -> bool:
    cur = await conn.execute("DELETE FROM summaries WHERE id = ?", (check_id(summary_id, "summary id"),))
    return cur.rowcount > 0


async def reusable_summaries(
    conn: Connection,
    channel_id: int,
    start_id: int,
    end_id: int,
    *,
    since: datetime,
    visible_to: int,
    limit: int = 5,
) -> list[SummaryRecord]:
    """Recent summaries in a channel that read within ``start_id..end_id`` up to ``end_id``, that may be shown again.

    Newest first. (A summary may have read fewer messages than its window held, e.g. when
    it was cut to the model's input budget; the caller compares exactly what was read.)

    Only summaries made at or after ``since``, public or ``visible_to``'s own, whose every source
    message is still stored and was not edited after the summary was made (a deleted source
    already deleted the summary). The caller still compares the sources with what it read.
    """
    where, args = _filters(None, channel_id, None, visible_to)
    rows = await conn.execute_fetchall(
        f"SELECT {_COLUMNS} FROM summaries AS s WHERE TRUE{where} AND start_id >= ? AND end_id = ? AND created_at >= ?"
        " AND NOT EXISTS (SELECT 1 FROM summary_sources AS src LEFT JOIN messages AS m ON m.id = src.message_id"
        "   WHERE src.summary_id = s.id AND (m.id IS NULL OR coalesce(m.edited_at, 0) > s.created_at))"
        " ORDER BY created_at DESC, id DESC LIMIT ?",
        (*args, check_id(start_id, "start id"), check_id(end_id, "end id"), to_ms(since, "since"), limit),
    )
    out = []
    for r in rows:
        sources = await conn.execute_fetchall(
            "SELECT message_id FROM summary_sources WHERE summary_id = ? ORDER BY message_id", (r[0],)
        )
        out.append(_from_row(r, [s[0] for s in sources]))
    return out
