"""Shared fixtures: tiny random models on disk and the embedded model's conversion cache.

Models are cached under ``tests/.cache`` (gitignored) keyed by the code that builds them,
so later test runs skip the ~15 s it takes to build one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.tunables import register_settings
from engine.models import save_tiny_model

# The application declares its settings at start (bot.__main__, RecapBot); storage tests use them directly.
register_settings()

CACHE_ROOT = Path(__file__).parent / ".cache"

# A wider weight init than the library default makes greedy outputs varied (not one token
# repeated), so "batched equals unbatched" compares real, distinct token sequences.
TINY_CONFIG: dict[str, dict[str, Any]] = {"causal": {"initializer_range": 0.3}, "seq2seq": {"init_std": 0.3}}


def cached_tiny_model(kind: str, **config: Any) -> Path:
    """Path of a tiny model of ``kind`` built by ``save_tiny_model``, built once per code version."""
    key_src = inspect.getsource(save_tiny_model) + kind + json.dumps(config, sort_keys=True)
    folder = CACHE_ROOT / f"tiny-{kind}-{hashlib.sha256(key_src.encode()).hexdigest()[:12]}"
    if (folder / "recap-tiny.json").is_file():  # written last: the folder is complete
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tiny_model(tmp, kind, **config)
    try:
        tmp.rename(folder)
    except OSError:  # another test run built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@pytest.fixture(scope="session")
def tiny_causal_dir() -> Path:
    return cached_tiny_model("causal", **TINY_CONFIG["causal"])


@pytest.fixture(scope="session")
def tiny_seq2seq_dir() -> Path:
    return cached_tiny_model("seq2seq", **TINY_CONFIG["seq2seq"])


@pytest.fixture(scope="session")
def embedded_cache_dir() -> Path:
    """Pass as ``cache_dir=`` to ``load_backend("embedded", ...)``: the de-quantized model is kept here."""
    folder = CACHE_ROOT / "model-cache"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ------------------------------------------------------------------ PostgreSQL

_PG_SKIPPED: list[str] = []


def _require_postgres() -> bool:
    return os.environ.get("RECAP_REQUIRE_POSTGRES", "") not in ("", "0")


@pytest.fixture(scope="session")
def pg_server():
    """The URL of a PostgreSQL database the tests may create schemas in: RECAP_TEST_POSTGRES_URL, or
    a throw-away cluster (tests/pg_cluster.py) started here and stopped at the end of the run.
    Without either the PostgreSQL tests are skipped, except where RECAP_REQUIRE_POSTGRES=1 (CI)."""
    from tests.pg_cluster import Cluster, find_bin_dir

    given = os.environ.get("RECAP_TEST_POSTGRES_URL", "")
    if given:
        yield given
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        why = "no PostgreSQL server (install the postgresql package or set RECAP_TEST_POSTGRES_URL)"
        if _require_postgres():
            pytest.fail(f"RECAP_REQUIRE_POSTGRES is set but there is {why}")
        _PG_SKIPPED.append(why)
        pytest.skip(why)
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        if _require_postgres():
            raise
        _PG_SKIPPED.append(f"the PostgreSQL cluster did not start: {exc}")
        pytest.skip(f"the PostgreSQL cluster did not start: {exc}")
    try:
        yield cluster.url
    finally:
        cluster.stop()


_SCHEMAS = iter(range(1, 1_000_000))


def _with_search_path(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


def _pg_statement(url: str, sql: str) -> None:
    """One statement on its own loop and thread: fixtures that need it may run inside a test's loop."""
    import asyncio
    import threading

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(failure, asyncio.run, run()))
    thread.start()
    thread.join(60)
    if failure:
        raise failure[0]


def _capture(failure: list[BaseException], fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BaseException as exc:  # handed to the caller's thread
        failure.append(exc)


@pytest.fixture(scope="session")
def pg_schemas(pg_server: str):
    """Makes fresh, empty schemas of the test server, as DATABASE_URLs (search_path set to each); for
    fixtures wider than one test. Every schema made is dropped at the end of the run."""
    made: list[str] = []

    def new_url() -> str:
        schema = f"t{os.getpid()}_{next(_SCHEMAS)}"
        _pg_statement(pg_server, f"CREATE SCHEMA {schema}")
        made.append(schema)
        return _with_search_path(pg_server, schema)

    yield new_url
    for schema in made:
        try:
            _pg_statement(pg_server, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        except Exception:  # the cluster is removed anyway when the tests made it
            pass


@pytest.fixture
def pg_url(pg_server: str):
    """A fresh, empty schema of the test server, as a DATABASE_URL (search_path set to it); dropped after."""
    schema = f"t{os.getpid()}_{next(_SCHEMAS)}"
    _pg_statement(pg_server, f"CREATE SCHEMA {schema}")
    yield _with_search_path(pg_server, schema)
    _pg_statement(pg_server, f"DROP SCHEMA {schema} CASCADE")


# ------------------------------------------------------------------ llama.cpp

_LLAMA_SKIPPED: list[str] = []


@pytest.fixture(scope="session")
def llama_cpp_home() -> Path:
    """The llama.cpp build (``make llama-cpp``): RECAP_LLAMA_CPP_DIR, else the repository's .llama.cpp.
    Without one its tests are skipped, except where RECAP_REQUIRE_LLAMA_CPP=1 (CI)."""
    from engine.generation import ModelLoadError
    from engine.llama_cpp import find_build

    home = Path(os.environ.get("RECAP_LLAMA_CPP_DIR") or Path(__file__).parents[1] / ".llama.cpp")
    try:
        find_build(home)
    except ModelLoadError as exc:
        if os.environ.get("RECAP_REQUIRE_LLAMA_CPP", "") not in ("", "0"):
            pytest.fail(f"RECAP_REQUIRE_LLAMA_CPP is set but {exc}")
        _LLAMA_SKIPPED.append(f"no llama.cpp build in {home} (`make llama-cpp` builds it)")
        pytest.skip(_LLAMA_SKIPPED[-1])
    return home


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _PG_SKIPPED:
        terminalreporter.write_line(f"PostgreSQL tests skipped: {_PG_SKIPPED[0]}.")
    if _LLAMA_SKIPPED:
        terminalreporter.write_line(f"llama.cpp tests skipped: {_LLAMA_SKIPPED[0]}.")
