"""Buffered high-rate ingest: messages are validated on ``add`` and written in batches.

A batch is written in ONE transaction when it reaches ``max_batch`` messages or ``max_delay_s``
after its first message, whichever comes first. Edits and deletes of buffered messages act on
the buffered copy, and every write path takes the buffer's lock, so the database never sees a
message resurrected or reverted by a late flush.

Pages fetched from Discord (backfill) are written through ``write_fetched``, under the same lock,
and skip ids deleted since (tombstones): a delete handled between the fetch and the write stays done.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from datetime import datetime
from typing import Any, Awaitable, Callable, Iterable, TypeVar

from .convert import check_id, check_text, text_in, to_ms
from .store import Database
from .errors import StorageError
from .messages import (
    ATTACHMENTS,
    CHANNEL_ID,
    CONTENT,
    EDITED_AT,
    GUILD_ID,
    ID,
    MAX_CONTENT_CHARS,
    DeleteResult,
    Row,
    StoredAttachment,
    StoredMessage,
    attachments_in,
    delete_messages,
    delete_missing,
    edit_message,
    message_row,
    write_rows,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
# Deleted message ids remembered so a page fetched before the delete cannot write them back.
# A fetched page is written right after its fetch, so recent deletes are the ones that matter.
MAX_TOMBSTONES = 100_000


class MessageBuffer:
    def __init__(self, db: Database, *, max_batch: int = 2000, max_delay_s: float = 1.0) -> None:
        if max_batch < 1 or max_delay_s <= 0:
            raise StorageError("MessageBuffer needs max_batch >= 1 and max_delay_s > 0.")
        self._db = db
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._pending: dict[int, Row] = {}  # message id -> row; insertion order is arrival order
        self._lock = asyncio.Lock()  # one flush / edit / delete at a time, in arrival order
        self._has_data = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The batch being written while the next one fills (Python work overlaps SQLite's).
        self._inflight: asyncio.Task[int] | None = None
        self._closed = False
        self.written = 0  # messages written so far (for metrics)
        self._gone: OrderedDict[int, None] = OrderedDict()  # recently deleted message ids, oldest first
        self._gone_places: set[int] = set()  # deleted channels, threads and servers (ids never reused)

    def __len__(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        """Start the background task that flushes ``max_delay_s`` after the first buffered message."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="storage-message-buffer")

    async def add(self, msg: StoredMessage) -> None:
        """Buffer one message (a buffered id is replaced: an edit before the flush)."""
        self._put(message_row(msg))
        if len(self._pending) >= self.max_batch:
            await self._write_full_batch()

    async def add_many(self, msgs: Iterable[StoredMessage]) -> None:
        rows = [message_row(m) for m in msgs]  # all valid, or none buffered
        for row in rows:
            self._put(row)
            if len(self._pending) >= self.max_batch:
                await self._write_full_batch()

    async def _write_full_batch(self) -> None:
        """Start writing one batch in the background; wait only if the previous one is still being written."""
        await self._settle()
        if len(self._pending) >= self.max_batch:
            self._inflight = asyncio.create_task(self._flush_one())

    async def _settle(self) -> None:
        """Wait for the background batch; its error (if any) is raised here, its messages kept."""
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    async def _flush_one(self) -> int:
        async with self._lock:
            return await self._write_batch()

    def _put(self, row: Row) -> None:
        if self._closed:
            raise StorageError("The message buffer is closed.")
        self._pending[row[ID]] = row
        self._has_data.set()

    async def flush(self) -> int:
        """Write everything buffered, ``max_batch`` messages per transaction. Returns messages written."""
        try:
            await self._settle()
        except Exception:
            pass  # that batch went back into the buffer and is retried just below
        async with self._lock:
            return await self._flush_locked()

    async def _flush_locked(self) -> int:
        written = 0
        while self._pending:
            written += await self._write_batch()
        self._has_data.clear()
        return written

    async def _write_batch(self) -> int:
        batch = self._take(self.max_batch)
        if not batch:
            return 0
        try:
            written = await self._db.writing(write_rows, list(batch.values()))
        except BaseException:
            # Keep the batch for the next flush; newer buffered copies of the same ids win.
            self._pending = {**batch, **self._pending}
            raise
        self.written += written
        return written

    def _take(self, n: int) -> dict[int, Row]:
        if len(self._pending) <= n:
            batch, self._pending = self._pending, {}
            return batch
        keys = list(itertools.islice(self._pending, n))
        return {key: self._pending.pop(key) for key in keys}

    async def edit(
        self,
        message_id: int,
        content: str,
        edited_at: datetime,
        attachments: list[StoredAttachment] | None = None,
    ) -> bool:
        """Edit the buffered copy if there is one, else the stored message. False when neither exists."""
        mid = check_id(message_id, "message id")
        new_content = text_in(check_text(content, f"Message {mid}: content", MAX_CONTENT_CHARS))
        new_edited = to_ms(edited_at, "edited_at")
        new_attachments = attachments_in(attachments, mid) if attachments is not None else None
        async with self._lock:
            row = self._pending.get(mid)
            if row is not None:
                patched = list(row)
                patched[CONTENT] = new_content
                patched[EDITED_AT] = new_edited
                if attachments is not None:
                    patched[ATTACHMENTS] = new_attachments
                self._pending[mid] = tuple(patched)
                return True
            return await self._db.writing(edit_message, mid, content, edited_at, attachments)

    async def delete(self, ids: Iterable[int] | int) -> DeleteResult:
        """Drop buffered copies and delete stored messages (with their summaries)."""
        id_list = [check_id(i, "message id") for i in ([ids] if isinstance(ids, int) else ids)]
        async with self._lock:
            self._bury(id_list)
            dropped = sum(self._pending.pop(i, None) is not None for i in id_list)
            result = await self._db.writing(delete_messages, id_list)
        return DeleteResult(messages=result.messages + dropped, summaries=result.summaries)

    def _bury(self, ids: Iterable[int]) -> None:
        for i in ids:
            self._gone[i] = None
            self._gone.move_to_end(i)
        while len(self._gone) > MAX_TOMBSTONES:
            self._gone.popitem(last=False)

    def forget_places(self, ids: Iterable[int]) -> None:
        """Channels, threads or servers that were deleted: a page fetched from them is never written."""
        self._gone_places.update(check_id(i, "channel or server id") for i in ids)

    def revive_place(self, place_id: int) -> None:
        """A server the bot was invited back to (server ids, unlike channel ids, can come back)."""
        self._gone_places.discard(place_id)

    def is_deleted(self, message_id: int) -> bool:
        return message_id in self._gone

    async def knows(self, message_id: int) -> bool:
        """Is this message buffered or stored (an edit of anything else has nothing to change)?"""
        mid = check_id(message_id, "message id")
        if mid in self._pending:
            return True
        async with self._db.read() as conn:
            rows = await conn.execute_fetchall("SELECT 1 FROM messages WHERE id = ?", (mid,))
        return bool(rows)

    async def write_fetched(self, msgs: Iterable[StoredMessage]) -> int:
        """Write a page fetched from Discord, in order with live deletes: ids deleted since are skipped.

        A buffered (live) copy of a message is newer than a fetched one and is kept.
        """
        rows = [message_row(m) for m in msgs]
        async with self._lock:
            rows = [
                r for r in rows
                if r[ID] not in self._gone and r[ID] not in self._pending
                and r[CHANNEL_ID] not in self._gone_places and r[GUILD_ID] not in self._gone_places
            ]
            if not rows:
                return 0
            return await self._db.writing(write_rows, rows)

    async def reconcile(self, channel_id: int, after_id: int, upto_id: int, present: Iterable[int]) -> DeleteResult:
        """Discord was read for ``(after_id, upto_id]`` of a channel: stored messages there that it did not
        return were deleted while nobody listened, and are deleted now (see ``messages.delete_missing``)."""
        present_ids = set(present)
        async with self._lock:
            result, gone = await self._db.writing(delete_missing, channel_id, after_id, upto_id, present_ids)
            self._bury(gone)
        return result

    async def write_after_flush(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Flush, then run ``fn(conn, ...)`` in a write transaction before anything else is buffered-written.

        Use it for deletes that select by channel, server or author (``storage.erasure``), so messages
        still in the buffer are deleted too.
        """
        await self.flush()
        async with self._lock:
            await self._flush_locked()  # anything added meanwhile
            return await self._db.writing(fn, *args, **kwargs)

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self._has_data.wait()
            try:  # the delay, cut short by aclose()
                await asyncio.wait_for(self._stop.wait(), self.max_delay_s)
            except TimeoutError:
                pass
            try:
                await self.flush()
            except Exception:
                log.exception("Flushing %d buffered messages failed; will retry", len(self._pending))

    async def aclose(self) -> None:
        """Stop the background task (never mid-transaction) and write everything still buffered."""
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            self._has_data.set()
            await task
        try:
            await self.flush()
        finally:
            self._closed = True
