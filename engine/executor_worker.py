"""The thread that owns the model.

Jobs go in through a queue; each job's outcome comes back to the event loop with
``loop.call_soon_threadsafe`` on that job's own future. Nothing here runs on the
event loop except the settling of those futures.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import threading
from typing import Any, Callable, Sequence, TypeVar

from .executor_queue import Entry
from .generation import GenerationError, GenerationResult, GenerationSettings, OutOfMemory, Prompt
from .backend import Backend

log = logging.getLogger(__name__)

T = TypeVar("T")
Outcome = GenerationResult | GenerationError | None  # None: the row was dropped (its caller left)

WARMUP_PROMPT = Prompt("Summarize the conversation in one sentence.", "Ann: lunch at noon?\nBo: sure, see you there")


class WorkerDied(RuntimeError):
    """The worker thread ended while jobs were still due (a BaseException escaped a job)."""


class ModelWorker:
    """One thread, one job at a time, in submission order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str = "recap-model") -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.exited: asyncio.Future[None] = loop.create_future()

    def start(self) -> None:
        self._thread.start()

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on the worker thread; the returned future (on the loop) gets its value or exception."""
        future: asyncio.Future[T] = self._loop.create_future()
        if not self._thread.is_alive() and self._thread.ident is not None:
            future.set_exception(WorkerDied("the model worker thread is not running"))
            return future
        self._jobs.put((fn, future))
        return future

    def stop(self) -> None:
        """Finish the jobs already given, then end the thread."""
        self._jobs.put(None)

    def _main(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                fn, future = job
                try:
                    value = fn()
                except Exception as exc:  # noqa: BLE001 - delivered to the waiter, which decides
                    self._settle(future, None, exc)
                except BaseException as exc:  # noqa: BLE001 - the thread dies; waiters must hear of it
                    log.critical("model worker thread died: %r", exc)
                    self._settle(future, None, WorkerDied(f"the model worker thread died ({type(exc).__name__})"))
                    return
                else:
                    self._settle(future, value, None)
        finally:
            self._fail_leftovers()
            self._settle(self.exited, None, None)

    def _fail_leftovers(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._settle(job[1], None, WorkerDied("the model worker thread stopped before this job ran"))

    def _settle(self, future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(value)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


# ---- functions below run on the worker thread ----


def load_on_thread(factory: Callable[[], Backend], previous: Backend | None = None) -> Backend:
    """Free a crashed predecessor, load the model, and warm it up on a GPU."""
    if previous is not None:
        release_on_thread(previous)
        del previous
    backend = factory()
    if backend.device.startswith("cuda"):
        # The first CUDA generate pays for kernel selection and allocator growth; do it before users do.
        backend.generate_batch([WARMUP_PROMPT], GenerationSettings(max_new_tokens=8))
    return backend


def release_on_thread(backend: Backend | None) -> None:
    """Drop the model's tensors and hand cached device memory back."""
    if backend is not None:
        backend.close()  # a local model drops its weights; a remote one closes its connections
    gc.collect()
    _empty_device_cache()


def run_batch(backend: Backend, entries: Sequence[Entry], settings: GenerationSettings) -> list[Outcome]:
    """Generate every live row; on out-of-memory retry in halves, and fail only a row that OOMs alone.

    ``settings`` is the group's settings with the largest ``max_new_tokens`` of the batch;
    each row stops at its own. Any other exception escapes: the caller treats it as a crash.
    """
    outcomes: list[Outcome] = [None] * len(entries)

    def attempt(indices: list[int]) -> None:
        live = [i for i in indices if not entries[i].cancelled]
        if not live:
            return
        limits = [entries[i].max_new_tokens for i in live]
        try:
            results = backend.generate_batch(
                [entries[i].request.prompt for i in live],
                settings.with_(max_new_tokens=max(limits)),
                row_max_new_tokens=limits,
                stop_rows=lambda: [entries[i].cancelled for i in live],
            )
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            del exc  # the traceback holds the failed batch's tensors
            _empty_device_cache()
            if len(live) == 1:
                outcomes[live[0]] = OutOfMemory(
                    f"out of memory generating {entries[live[0]].prompt_tokens} prompt tokens even alone"
                )
                return
            log.warning("out of memory on a batch of %d; retrying in halves", len(live))
            half = len(live) // 2
            attempt(live[:half])
            attempt(live[half:])
            return
        for i, result in zip(live, results):
            outcomes[i] = result

    attempt(list(range(len(entries))))
    return outcomes


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch.cuda / torch.OutOfMemoryError
        return True
    # MPS and some CPU allocators report it as a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()
