"""Executor statistics, and an optional Prometheus endpoint that reads them.

``ExecutorStats`` is written on the event loop and read from the metrics HTTP
thread, so every access holds its lock. Recent figures (throughput, latency
percentiles) come from bounded windows, so they follow the current load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol


class MetricsSource(Protocol):
    """What the endpoint reads: the executor's ``metrics()`` (a protocol, so this module imports no executor)."""

    def metrics(self, guild: str | None = None) -> dict[str, Any]: ...

log = logging.getLogger(__name__)

RECENT_BATCHES = 128
RECENT_LATENCIES = 512
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COUNTERS = (
    "submitted", "completed", "failed", "rejected", "invalid", "timeouts",
    "cancellations", "oom", "engine_errors", "restarts", "batches",
)


@dataclass(frozen=True)
class BatchRecord:
    rows: int
    new_tokens: int
    duration_s: float
    guilds: tuple[tuple[str, int, int], ...] = ()  # (guild, its rows, its new tokens) in this batch
    ended_at: float = 0.0  # time.perf_counter() when it finished


class ExecutorStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._batch_sizes: Counter[int] = Counter()
        self._batches: deque[BatchRecord] = deque(maxlen=RECENT_BATCHES)
        self._latencies: deque[float] = deque(maxlen=RECENT_LATENCIES)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def record_batch(self, rows: int, new_tokens: int, duration_s: float,
                     guilds: dict[str, tuple[int, int]] | None = None) -> None:
        """``guilds``: guild -> (rows, new tokens) of that guild in the batch, for per-server figures."""
        shares = tuple((g, r, t) for g, (r, t) in (guilds or {}).items())
        with self._lock:
            self._counts["batches"] += 1
            self._batch_sizes[rows] += 1
            self._batches.append(BatchRecord(rows, new_tokens, duration_s, shares, time.perf_counter()))

    def guild_snapshot(self, guild: str) -> dict[str, Any]:
        """One guild's recent figures: sizes of the batches its requests ran in, and its tokens per busy second."""
        with self._lock:
            mine = [(b, r, t) for b in self._batches for g, r, t in b.guilds if g == guild]
        sizes: Counter[int] = Counter(b.rows for b, _, _ in mine)
        busy = busy_seconds([b for b, _, _ in mine])
        tokens = sum(t for _, _, t in mine)
        return {
            "batches": len(mine),
            "batch_sizes": dict(sorted(sizes.items())),
            "tokens_per_s": round(tokens / busy, 2) if busy > 0 else 0.0,
        }

    def record_latency(self, seconds: float) -> None:
        with self._lock:
            self._counts["completed"] += 1
            self._latencies.append(seconds)

    def seconds_per_request(self) -> float | None:
        """Recent busy time per request served (batches overlap their rows); None before any batch."""
        with self._lock:
            rows = sum(b.rows for b in self._batches)
            return busy_seconds(self._batches) / rows if rows else None

    def mean_batch_s(self) -> float | None:
        with self._lock:
            if not self._batches:
                return None
            return sum(b.duration_s for b in self._batches) / len(self._batches)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            busy = busy_seconds(self._batches)
            tokens = sum(b.new_tokens for b in self._batches)
            latencies = sorted(self._latencies)
            out: dict[str, Any] = {name: self._counts[name] for name in COUNTERS}
            out["batch_sizes"] = dict(sorted(self._batch_sizes.items()))
            out["tokens_per_s"] = round(tokens / busy, 2) if busy > 0 else 0.0
            out["p50_s"] = _percentile(latencies, 0.50)
            out["p95_s"] = _percentile(latencies, 0.95)
            return out


def busy_seconds(batches: Iterable[BatchRecord]) -> float:
    """Seconds in which at least one of ``batches`` ran. Batches that overlap (a backend that batches by
    itself runs several at once) count once, so per-request times and tokens/s stay true."""
    total, covered_to = 0.0, float("-inf")
    for start, end in sorted((b.ended_at - b.duration_s, b.ended_at) for b in batches):
        if end > covered_to:
            total += end - max(start, covered_to)
            covered_to = end
    return total


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return round(sorted_values[index], 4)


class ExecutorCollector:
    """A prometheus_client collector: each scrape reads ``executor.metrics()`` once."""

    def __init__(self, executor: MetricsSource) -> None:
        self.executor = executor

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        m = self.executor.metrics()
        for name, doc in (
            ("queue_depth", "Requests waiting for the model."),
            ("in_flight", "Requests in the batch the model is running."),
            ("tokens_per_s", "Recent generation throughput (new tokens per busy second)."),
        ):
            yield GaugeMetricFamily(f"recap_executor_{name}", doc, value=float(m[name]))
        yield GaugeMetricFamily("recap_executor_ready", "1 when the model is loaded and serving.", value=1.0 if m["ready"] else 0.0)
        latency = GaugeMetricFamily("recap_executor_latency_seconds", "Recent end-to-end request latency.", labels=["quantile"])
        for label, key in (("0.5", "p50_s"), ("0.95", "p95_s")):
            if m[key] is not None:
                latency.add_metric([label], float(m[key]))
        yield latency
        for name in COUNTERS:
            yield CounterMetricFamily(f"recap_executor_{name}", f"Executor {name.replace('_', ' ')} since start.", value=float(m[name]))
        sizes: dict[int, int] = m["batch_sizes"]
        buckets, running = [], 0
        for bound in BATCH_SIZE_BUCKETS:
            running = sum(count for size, count in sizes.items() if size <= bound)
            buckets.append((str(float(bound)), float(running)))
        buckets.append(("+Inf", float(sum(sizes.values()))))
        yield HistogramMetricFamily(
            "recap_executor_batch_size", "Rows per generate call.",
            buckets=buckets, sum_value=float(sum(size * count for size, count in sizes.items())),
        )


class MetricsServer:
    """A running Prometheus endpoint; ``close()`` stops it."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host, self.port = server.server_address[:2]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(executor: MetricsSource, port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve the executor's metrics for Prometheus on ``addr:port`` (port 0: any free port).

    A registry of its own, so starting it twice (tests, restarts) never collides.
    Raises ``OSError`` when the port is taken.
    """
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExecutorCollector(executor))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    started = MetricsServer(server, thread)
    log.info("Prometheus metrics on %s", started.url)
    return started
