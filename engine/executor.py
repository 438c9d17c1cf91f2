"""The async inference executor: one worker thread owns the model; the event loop only schedules.

``submit`` admits a request at once or raises ``Overloaded``; its token count is
checked on a tokenizer thread; then it waits in a fair queue (priority, then
round-robin over guilds) until the scheduler task packs it into a batch with
requests of the same generation settings. The worker thread runs the batch as
one left-padded ``generate`` and hands each row's result back to its own future.

Caps (total, per guild, per user) count units of work: a map-reduce job's
chunks are one unit, and ``reserve`` holds a unit for a whole job so its later
stages are never refused half-way. A unit keeps at most ``max_job_requests``
requests in the queue at once; its further requests wait their turn outside it.

A caller that is cancelled or times out leaves the queue at once; if its row is
already generating, the row is stopped at the next decoding step (a per-row
stopping criterion reads the entry's ``cancelled`` flag). A worker crash fails
every waiter with ``EngineDead`` and reloads the model on a fresh thread.

A backend that batches by itself (``Backend.parallel_rows`` > 1: a llama.cpp or other serving engine
that batches concurrent requests continuously) is not held to one batch at a time: each request goes
over as its own one-row batch as soon as one of its ``parallel_rows`` places is free, so a short summary
never waits for a long one that happened to start with it. The fair queue still decides the order.

This module is the front (``submit``, ``reserve``, ``metrics``) and the one scheduler task. The jobs
it composes live beside it, one per module: admission and caps (``executor_admission``), batch
forming and ETAs (``executor_batching``), the fair queue (``executor_queue``), the worker thread's
lifecycle and a batch's run (``executor_worker``), statistics and the metrics endpoint
(``executor_metrics``). None of them imports this module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import inspect
import logging
import time
import uuid
from collections import Counter
from typing import Any, Callable, Iterable

from .executor_admission import Caps, JobReservation, check_shape
from .executor_batching import ACCELERATOR_BATCH_TOKENS, batch_tokens_for, fits_context, queue_eta, wait_for_company
from .executor_metrics import ExecutorStats, MetricsServer, start_metrics_server
from .executor_queue import Entry, FairQueue, job_unit
from .executor_worker import ModelWorker, load_on_thread, release_on_thread, run_batch
from .generation import (
    EngineDead,
    ExecutorClosed,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    OutOfMemory,
    Overloaded,
    Prompt,
    QueueStatus,
    RequestTimeout,
)
from .backend import Backend


__all__ = ["Executor", "MetricsServer", "start_metrics_server"]

log = logging.getLogger(__name__)

DEFAULT_PER_REQUEST_S = 2.0  # retry hint before any batch has been timed
CLOSE_WAIT_S = 30.0  # how long aclose waits for the worker thread to finish its current step
class Executor:
    def __init__(
        self,
        backend_factory: Callable[[], Backend],
        *,
        max_batch_size: int = 8,
        max_batch_tokens: int | None = None,  # None: by the loaded model's device (CPU_BATCH_TOKENS...)
        max_batch_wait_ms: float = 15,
        max_queue: int = 64,
        max_queue_per_guild: int = 40,
        max_queue_per_user: int = 12,
        request_timeout_s: float = 600.0,
        max_job_requests: int = 8,
    ) -> None:
        limits = (max_batch_size, max_batch_tokens or 1, max_queue, max_queue_per_guild, max_queue_per_user, max_job_requests)
        if min(limits) < 1:
            raise ValueError("batch and queue limits must be at least 1")
        if max_batch_wait_ms < 0 or request_timeout_s <= 0:
            raise ValueError("max_batch_wait_ms must be >= 0 and request_timeout_s > 0")
        self._factory = backend_factory
        self.max_batch_size = max_batch_size
        self._batch_tokens_given = max_batch_tokens
        self.max_batch_tokens = max_batch_tokens or ACCELERATOR_BATCH_TOKENS  # set by device at start()
        self.max_batch_wait_s = max_batch_wait_ms / 1000
        self.request_timeout_s = request_timeout_s
        # The caps live in one place, read through the properties below.
        self._caps = Caps(max_queue, max_queue_per_guild, max_queue_per_user, max_job_requests)

        self._stats = ExecutorStats()
        self._queue = FairQueue()
        self._pending: set[Entry] = set()  # admitted and not finished: validating, queued or running
        self._running: list[Entry] = []  # rows generating now, in every batch
        self._running_since = 0.0
        self._alongside: set[asyncio.Task[None]] = set()  # one-row batches on a self-batching backend
        self._row_pool: concurrent.futures.ThreadPoolExecutor | None = None  # their blocking calls
        self._epoch = 0  # bumped by each reload: a crash seen by an older batch restarts nothing twice

        self._backend: Backend | None = None  # the loaded model; only the worker thread generates with it
        self._known: Backend | None = None  # the last loaded backend: its tokenizer and facts outlive a crash
        self._worker: ModelWorker | None = None
        self._tokenizer_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._positions_due = False
        self._loading = False
        self._started = False
        self._closed = False
        self._dead: EngineDead | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def max_queue(self) -> int:
        return self._caps.max_queue

    @property
    def max_queue_per_guild(self) -> int:
        return self._caps.max_per_guild

    @property
    def max_queue_per_user(self) -> int:
        return self._caps.max_per_user

    @property
    def max_job_requests(self) -> int:
        """One unit's requests admitted into the queue at once."""
        return self._caps.max_job_requests

    # ---- lifecycle ----

    async def start(self) -> None:
        """Load the model on the worker thread. Raises ``ModelLoadError`` (the message says what to do)."""
        if self._closed:
            raise ExecutorClosed("this executor was closed; make a new one")
        if self._started:
            return
        self._wakeup = asyncio.Event()
        self._tokenizer_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="recap-tokenizer")
        try:
            await self._load_worker()
        except BaseException:
            self._tokenizer_pool.shutdown(wait=False)
            self._tokenizer_pool = None
            raise
        self._started = True
        backend = self._backend
        assert backend is not None
        self.max_batch_tokens = self._batch_tokens_given or batch_tokens_for(backend.device)
        log.info(
            "executor ready: %s on %s (%s), batches of up to %d requests / %d tokens",
            backend.name, backend.device, backend.dtype_name, self.max_batch_size, self.max_batch_tokens,
        )
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule(), name="recap-executor-scheduler")

    async def _load_worker(self, previous: Backend | None = None) -> None:
        worker = ModelWorker(asyncio.get_running_loop())
        self._worker = worker
        self._loading = True
        worker.start()
        try:
            self._backend = await worker.call(functools.partial(load_on_thread, self._factory, previous))
            self._known = self._backend
        except BaseException:
            worker.stop()
            self._worker = None
            raise
        finally:
            self._loading = False

    async def aclose(self) -> None:
        """Stop accepting; fail queued and running requests with ``ExecutorClosed``; free the model."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._closed = True
        closed = ExecutorClosed("the summarizer is shutting down")
        self._fail(self._queue.drain(), closed)
        for entry in self._running:
            entry.cancelled = True  # the worker stops these rows at the next decoding step
        self._fail(self._running, closed)
        if self._scheduler is not None:
            self._scheduler.cancel()
            if self._wakeup is not None:  # a scheduler that missed the cancel still sees _closed and returns
                self._wakeup.set()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        if self._alongside:  # their rows were cancelled above: each call returns within a poll
            await asyncio.wait(set(self._alongside), timeout=CLOSE_WAIT_S)
        if self._row_pool is not None:
            self._row_pool.shutdown(wait=False)
        await self._retire_worker()
        if self._tokenizer_pool is not None:
            self._tokenizer_pool.shutdown(wait=False)
        log.info("executor closed")

    async def _retire_worker(self, release: bool = True) -> None:
        """End the worker thread, freeing the model on it first (unless a successor frees it)."""
        worker, backend = self._worker, self._backend
        self._worker = self._backend = None
        if worker is None:
            return
        if release:
            released = worker.call(functools.partial(release_on_thread, backend))
            released.add_done_callback(_note_release_failure)
        del backend
        worker.stop()
        try:
            await asyncio.wait_for(asyncio.shield(worker.exited), CLOSE_WAIT_S)
        except TimeoutError:
            log.warning("the model worker did not stop within %.0fs; leaving it behind", CLOSE_WAIT_S)

    async def __aenter__(self) -> "Executor":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- public interface ----

    @property
    def backend(self) -> Backend:
        """The loaded model's facts and tokenizer helpers (``render``, ``context_window``...).

        Its tokenizer helpers are thread-safe (a lock) and fine on the event loop for short texts;
        use ``count_tokens`` for long ones. Generation goes through ``submit`` only.
        """
        if self._known is None or self._closed:
            raise ExecutorClosed("the model is not loaded (start() not called, or closed)")
        return self._known

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def state(self) -> str:
        """new, loading, ready, restarting, dead (could not reload) or closed."""
        if self._closed:
            return "closed"
        if self._dead is not None:
            return "dead"
        if not self._started:
            return "loading" if self._loading else "new"
        return "ready" if self._backend is not None and not self._loading else "restarting"

    async def count_tokens(self, text: str) -> int:
        return await self._on_tokenizer_thread(self.backend.count_tokens, text)

    async def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of ``prompt`` as the model will see it (chat template included), off the event loop."""
        return await self._on_tokenizer_thread(self.backend.prompt_tokens, prompt)

    async def submit(self, request: GenerationRequest) -> GenerationResult:
        """Generate for one request. Raises ``Overloaded`` at once when the queue is full, or another
        ``GenerationError``: ``InvalidRequest``, ``RequestTimeout``, ``OutOfMemory``, ``EngineDead``, ``ExecutorClosed``."""
        self._check_open()
        try:
            check_shape(request)
        except InvalidRequest:
            self._stats.count("invalid")
            raise
        entry = self._admit(request)
        timeout = request.timeout if request.timeout is not None else self.request_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._caps.pass_gate(entry)
                entry.prompt_tokens = await self._on_tokenizer_thread(self._validate_on_thread, request)
                self._check_open()
                if not entry.future.done():  # a crash while validating already failed it
                    self._enqueue(entry)
                result = await entry.future
        except TimeoutError:
            self._stats.count("timeouts")
            raise RequestTimeout(f"no result within {timeout:g}s") from None
        except asyncio.CancelledError:
            self._stats.count("cancellations")
            raise
        except InvalidRequest:
            self._stats.count("invalid")
            raise
        except GenerationError:
            self._stats.count("failed")
            raise
        finally:
            self._release(entry)
        latency = time.perf_counter() - entry.admitted_at
        self._stats.record_latency(latency)
        return dataclasses.replace(result, latency_s=round(latency, 4))

    def reserve(self, guild: str, user: str) -> "JobReservation":
        """Hold one unit of the caps for a whole job (every stage of a map-reduce), or raise ``Overloaded`` at once.

        Requests with ``job=reservation.job`` (same guild and user) belong to it; ``release()`` when the job ends.
        """
        self._check_open()
        job = uuid.uuid4().hex
        unit = job_unit(GenerationRequest(Prompt("", ""), guild=guild, user=user, job=job))
        assert unit is not None
        self._check_room(unit, guild, user)
        self._caps.hold(unit, guild, user)
        return JobReservation(self._caps, unit, guild, user, job)

    def metrics(self, guild: str | None = None) -> dict[str, Any]:
        """Whole-executor figures; with ``guild``, that guild's share of them (queue, in flight, jobs, batches)."""
        if guild is not None:
            return self._guild_metrics(guild)
        out = self._stats.snapshot()
        out.update(
            queue_depth=len(self._queue),
            in_flight=len(self._running),
            pending=len(self._pending),
            jobs=self._caps.jobs,
            ready=self.ready,
            state=self.state,
            max_batch_size=self.max_batch_size,
        )
        if self._known is not None:
            out.update(model=self._known.name, device=self._known.device, dtype=self._known.dtype_name)
        return out

    def _guild_metrics(self, guild: str) -> dict[str, Any]:
        out = self._stats.guild_snapshot(guild)
        out.update(
            queue_depth=sum(1 for e in self._queue.order() if e.request.guild == guild),
            in_flight=sum(1 for e in self._running if e.request.guild == guild),
            jobs=self._caps.guild_jobs(guild),
        )
        return out

    # ---- admission ----

    def _check_open(self) -> None:
        if self._closed:
            raise ExecutorClosed("the summarizer is shutting down")
        if self._dead is not None:
            raise EngineDead(str(self._dead))
        if not self._started:
            raise ExecutorClosed("the executor is not started")

    def _admit(self, request: GenerationRequest) -> Entry:
        """Take a place or raise ``Overloaded`` at once (never wait for room). A job's later requests share its unit."""
        entry = Entry(request, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._check_room(entry.unit, request.guild, request.user)
        self._pending.add(entry)
        self._stats.count("submitted")
        self._caps.hold(entry.unit, request.guild, request.user)
        return entry

    def _check_room(self, unit: str, guild: str, user: str) -> None:
        """Refuse a new unit of work at once, with a retry hint, when a cap is full."""
        scope = self._caps.full(unit, guild, user)
        if scope == "queue":
            self._reject(f"the queue is full ({self.max_queue} summaries)", self._retry_after(None))
        if scope == "guild":
            self._reject(f"this server already has {self.max_queue_per_guild} summaries queued",
                         self._retry_after(lambda e: e.request.guild == guild))
        if scope == "user":
            self._reject(f"you already have {self.max_queue_per_user} summaries queued",
                         self._retry_after(lambda e: e.request.user == user))

    def _reject(self, message: str, retry_after: float) -> None:
        self._stats.count("rejected")
        raise Overloaded(f"{message}; try again in about {retry_after:.0f}s", retry_after)

    def _retry_after(self, mine: Callable[[Entry], bool] | None) -> float:
        """Seconds until a place frees: the running batch for the global cap, else this scope's first request."""
        per_request = self._stats.seconds_per_request() or DEFAULT_PER_REQUEST_S
        if mine is None or any(mine(e) for e in self._running):
            ahead = len(self._running) or 1
        else:
            order = self._queue.order()
            ahead = next((i + 1 for i, e in enumerate(order) if mine(e)), len(order)) + len(self._running)
        return round(min(3600.0, max(1.0, per_request * ahead)), 1)

    def _validate_on_thread(self, request: GenerationRequest) -> int:
        """Token count of the rendered prompt; raises ``InvalidRequest`` if it cannot fit the context."""
        backend = self._known
        if backend is None:
            raise ExecutorClosed("the summarizer is shutting down")
        tokens = backend.prompt_tokens(request.prompt)
        backend.check_fits(tokens, request.settings)
        return tokens

    async def _on_tokenizer_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        pool = self._tokenizer_pool
        if pool is None or self._closed:
            raise ExecutorClosed("the summarizer is shutting down")
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def _enqueue(self, entry: Entry) -> None:
        entry.enqueued_at = time.perf_counter()
        self._queue.push(entry)
        self._schedule_positions()
        assert self._wakeup is not None
        self._wakeup.set()

    def _release(self, entry: Entry) -> None:
        """The caller is done with this entry (result, error, timeout or cancellation)."""
        if entry not in self._pending:
            return
        self._pending.discard(entry)
        entry.cancelled = True  # a row still generating stops at the next step
        if self._queue.remove(entry):
            self._schedule_positions()
        if self._wakeup is not None:
            self._wakeup.set()  # a batch being gathered may have been waiting for this one
        if entry.gate is not None:
            entry.gate.release()
            entry.gate = None
        self._caps.unhold(entry.unit, entry.request.guild, entry.request.user)
        future = entry.future
        if future.done() and not future.cancelled():
            future.exception()  # mark retrieved: the caller may have left through another path

    # ---- queue positions ----

    def _schedule_positions(self) -> None:
        """Report positions once per loop iteration, however many queue changes happened in it."""
        if not self._positions_due:
            self._positions_due = True
            asyncio.get_running_loop().call_soon(self._report_positions)

    def _report_positions(self) -> None:
        self._positions_due = False
        per_request = self._stats.seconds_per_request()
        remaining = 0.0
        mean_batch = self._stats.mean_batch_s()
        if self._running and mean_batch is not None:
            remaining = max(0.0, mean_batch - (time.perf_counter() - self._running_since))
        for index, entry in enumerate(self._queue.order()):
            position = index + 1
            if entry.position == position or entry.request.on_queue is None:
                entry.position = position
                continue
            entry.position = position
            eta = None if per_request is None else queue_eta(remaining, per_request, position)
            try:
                outcome = entry.request.on_queue(QueueStatus(position, eta))
                if inspect.isawaitable(outcome):  # an async callback (e.g. editing a Discord message)
                    asyncio.ensure_future(outcome).add_done_callback(_note_callback_failure)
            except Exception:  # noqa: BLE001 - a caller's progress callback must not break the scheduler
                log.exception("on_queue callback failed")

    # ---- scheduling ----

    def _parallel_rows(self) -> int:
        """Rows the loaded backend generates at once across calls; 1: one batch at a time."""
        backend = self._backend or self._known
        return max(1, int(getattr(backend, "parallel_rows", 1) or 1))

    async def _schedule(self) -> None:
        """The one task that owns the queue: wait for work, pack a batch, run it, hand results back."""
        assert self._wakeup is not None
        while not self._closed:
            while not self._queue or (self._parallel_rows() > 1 and not self._free_place()):
                if self._closed or self._dead is not None:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._dead is not None:
                return
            if self._parallel_rows() > 1:
                self._send_alongside()
                continue
            await wait_for_company(self._queue, self._pending, self._wakeup, self.max_batch_size, self.max_batch_wait_s)
            batch = self._queue.take_batch(self.max_batch_size, self.max_batch_tokens,
                                           lambda rows, candidate: fits_context(self._known, rows, candidate))
            if not batch:
                continue
            self._schedule_positions()
            if not await self._run(batch):
                return  # the model could not be reloaded; every waiter has been failed

    def _free_place(self) -> bool:
        """A self-batching backend has a place for one more row (and is loaded: not mid-restart)."""
        # Counted by tasks, which _send_alongside adds at once: rows join _running only when their task runs.
        return self._backend is not None and not self._loading and len(self._alongside) < self._parallel_rows()

    def _send_alongside(self) -> None:
        """Start the next request in the fair order as its own one-row batch, beside those already running."""
        batch = self._queue.take_batch(1, self.max_batch_tokens, lambda rows, candidate: True)
        if not batch:
            return
        self._schedule_positions()
        if self._row_pool is None:
            self._row_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._parallel_rows(), thread_name_prefix="recap-rows")
        task = asyncio.get_running_loop().create_task(self._run_alongside(batch), name="recap-executor-row")
        self._alongside.add(task)
        task.add_done_callback(self._alongside.discard)

    async def _run_alongside(self, batch: list[Entry]) -> None:
        """One row on a self-batching backend, on a pool thread (the backend takes concurrent calls)."""
        backend, epoch = self._backend, self._epoch
        assert backend is not None and self._row_pool is not None
        try:
            call = functools.partial(run_batch, backend, batch, batch[0].request.settings)
            await self._run(batch, asyncio.get_running_loop().run_in_executor(self._row_pool, call), epoch)
        finally:
            if self._wakeup is not None:
                self._wakeup.set()  # a place is free

    async def _run(self, batch: list[Entry], running: "asyncio.Future[list[Any]] | None" = None,
                   epoch: int | None = None) -> bool:
        """Run one batch on the worker (or await ``running``, a self-batching backend's call already
        started). Returns False when the engine is dead for good."""
        if running is None:
            worker, backend = self._worker, self._backend
            assert worker is not None and backend is not None
            running = worker.call(functools.partial(run_batch, backend, batch, batch[0].request.settings))
        if not self._running:
            self._running_since = time.perf_counter()
        started = time.perf_counter()
        self._running.extend(batch)
        try:
            outcomes = await running
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything but OOM from generate is an engine crash
            if epoch is not None and epoch != self._epoch:  # this engine was already restarted by another row
                self._fail(batch, EngineDead(f"the model engine crashed ({type(exc).__name__}: {exc})"))
                return True
            return await self._recover(batch, exc)
        finally:
            self._running = [e for e in self._running if e not in batch]
        new_tokens, rows = 0, 0
        for entry, outcome in zip(batch, outcomes):
            if outcome is None or entry.future.done():
                continue
            if isinstance(outcome, GenerationError):  # this row failed alone (OOM, or a remote server's answer)
                if isinstance(outcome, OutOfMemory):
                    self._stats.count("oom")
                entry.future.set_exception(outcome)
            else:
                rows += 1
                new_tokens += outcome.new_tokens
                entry.future.set_result(outcome)
        if rows:
            guilds = Counter(e.request.guild for e in batch)
            guild_tokens = Counter()
            for entry, outcome in zip(batch, outcomes):
                if isinstance(outcome, GenerationResult):
                    guild_tokens[entry.request.guild] += outcome.new_tokens
            self._stats.record_batch(len(batch), new_tokens, time.perf_counter() - started,
                                     guilds={g: (n, guild_tokens[g]) for g, n in guilds.items()})
        if log.isEnabledFor(logging.DEBUG):  # who waited for whom, when tuning MAX_BATCH_SIZE / MAX_BATCH_TOKENS
            rows_by_guild = Counter(e.request.guild for e in batch)
            log.debug("batch of %d rows (%d prompt tokens at most, %d waiting) took %.1fs: %s", len(batch),
                      max(e.prompt_tokens for e in batch), len(self._queue), time.perf_counter() - started,
                      ", ".join(f"{g}:{n}" for g, n in rows_by_guild.items()))
        self._schedule_positions()
        return True

    async def _recover(self, batch: list[Entry], exc: BaseException) -> bool:
        """A crash: fail every waiter with ``EngineDead``, then reload the model on a fresh thread."""
        log.error("model worker crashed; failing %d waiters and restarting", len(self._pending), exc_info=exc)
        self._stats.count("engine_errors")
        self._epoch += 1
        dead = EngineDead(f"the model worker crashed ({type(exc).__name__}: {exc})")
        self._fail(batch, dead)
        self._queue.drain()
        self._fail(self._pending, dead)  # queued and still validating alike
        crashed = self._backend
        await self._retire_worker(release=False)
        try:
            await self._load_worker(previous=crashed)  # the new thread frees the crashed model first
        except Exception as load_exc:  # noqa: BLE001 - reported to every later caller
            log.error("could not reload the model after a crash: %s", load_exc)
            self._dead = EngineDead(f"the model could not be reloaded after a crash: {load_exc}")
            self._fail(self._queue.drain(), self._dead)
            self._fail(self._pending, self._dead)
            if self._wakeup is not None:
                self._wakeup.set()  # the scheduler sees _dead and ends
            return False
        self._stats.count("restarts")
        log.info("model worker restarted")
        return True

    def _fail(self, entries: Iterable[Entry], error: GenerationError) -> None:
        for entry in list(entries):
            entry.cancelled = True
            if not entry.future.done():
                entry.future.set_exception(error)


def _note_release_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        # A dead thread frees nothing itself; its references go with the worker object.
        log.debug("model release skipped: %s", future.exception())


def _note_callback_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("on_queue callback failed", exc_info=task.exception())
