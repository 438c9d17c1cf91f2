"""Leases and claims: which of several bot processes sharing one database does a piece of work.

A lease names one holder for a periodic job (the retention purge, a shard set's start-up sweep)
until it expires; the holder renews it each round, and a crashed holder's lease lapses so another
process takes over. Taking one is a single conditional upsert, so of two processes asking at once
exactly one gets it, on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta

from .connection import Connection
from .convert import check_text, to_ms

# This process, as a holder: host, pid and a random part (pids repeat across hosts and restarts).
HOLDER = f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


async def take_lease(conn: Connection, name: str, *, now: datetime, ttl: timedelta, holder: str = HOLDER) -> bool:
    """Take or renew the lease ``name`` until ``now + ttl``; False while another holder's lease runs."""
    rows = await conn.execute_fetchall(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
        "WHERE leases.holder = excluded.holder OR leases.expires_at <= ? RETURNING holder",
        (check_text(name, "lease name", 200), check_text(holder, "lease holder", 200), to_ms(now + ttl), to_ms(now)),
    )
    return bool(list(rows))


async def release_lease(conn: Connection, name: str, *, holder: str = HOLDER) -> bool:
    """Give the lease up early (the job is done); only its holder can."""
    cursor = await conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))
    return cursor.rowcount > 0


async def lease_holder(conn: Connection, name: str, *, now: datetime) -> str | None:
    """Who holds ``name`` now; None when nobody does (never taken, released or expired)."""
    rows = list(await conn.execute_fetchall(
        "SELECT holder FROM leases WHERE name = ? AND expires_at > ?", (name, to_ms(now))))
    return rows[0][0] if rows else None
