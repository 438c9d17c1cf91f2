"""Clean-up after erasures: asked for by every delete path, retried until one succeeds.

SQLite: deleted text lingers in old WAL page images until a checkpoint copies the zeroed pages
(``secure_delete``) into the main file and truncates the WAL. A checkpoint can fail while a
reader is busy; the request then stays pending and the history cog's loop retries it.
PostgreSQL: the clean-up is a VACUUM of the erased tables, run at most once a minute
(``Database.checkpoint_every_s``): the requests of that minute wait for it, pending.
"""

from __future__ import annotations

import logging
import time

from storage import Database, StorageError

log = logging.getLogger(__name__)


class ErasureCheckpoints:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._requested = 0  # erasures asked for so far
        self._done = 0  # erasures covered by the last successful checkpoint
        self._last_run = float("-inf")  # monotonic time of the last checkpoint started

    @property
    def pending(self) -> bool:
        return self._requested > self._done

    def request(self) -> None:
        """Something was erased: a checkpoint is owed."""
        self._requested += 1

    async def run(self) -> bool:
        """Checkpoint if one is owed. True when nothing is owed any more; never raises a storage error.

        The request counter is read before the checkpoint, so an erasure made while it runs
        stays pending (its pages may have missed this checkpoint).
        """
        if not self.pending:
            return True
        if time.monotonic() - self._last_run < self._db.checkpoint_every_s:
            return False  # the store's clean-up is costly: this request waits for the next one
        self._last_run = time.monotonic()
        upto = self._requested
        try:
            await self._db.checkpoint()
        except StorageError as exc:
            log.warning("the clean-up after an erasure (WAL checkpoint or VACUUM) did not finish (will retry): %s", exc)
            return False
        self._done = max(self._done, upto)
        return not self.pending

    async def now(self) -> bool:
        """``request()`` then ``run()``: for paths that erase and want the bytes gone at once."""
        self.request()
        return await self.run()
