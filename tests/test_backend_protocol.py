"""Both backends implement engine.backend.Backend: every member, with the protocol's call signature."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from engine.backend import Backend
from engine.models import ModelBackend, load_backend
from engine.remote_backend import RemoteBackend, RemoteConfig

MEMBERS = sorted(name for name in vars(Backend) if not name.startswith("_"))
METHODS = [name for name in MEMBERS if inspect.isfunction(vars(Backend)[name])]


def _params(fn) -> list[tuple[str, object, object]]:  # noqa: ANN001
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.fixture(scope="module")
def local(tiny_causal_dir: Path) -> ModelBackend:
    return load_backend(str(tiny_causal_dir), device="cpu")


@pytest.fixture
def remote() -> RemoteBackend:
    backend = RemoteBackend(RemoteConfig("http://127.0.0.1:9/v1"))  # not started: nothing is contacted
    yield backend
    backend.close()


def test_the_protocol_names_what_the_engine_uses() -> None:
    assert {"name", "device", "context_window", "prompt_format", "speakers", "answer_prefix", "generate_batch",
            "render", "count_tokens", "check_fits", "describe", "close"} <= set(MEMBERS)


@pytest.mark.parametrize("which", ["local", "remote"])
def test_each_backend_implements_every_member(which: str, request: pytest.FixtureRequest) -> None:
    backend = request.getfixturevalue(which)
    assert isinstance(backend, Backend)
    missing = [name for name in MEMBERS if not hasattr(backend, name)]
    assert not missing, missing
    for name in METHODS:
        assert _params(getattr(type(backend), name)) == _params(vars(Backend)[name]), name
    assert isinstance(backend.name, str) and isinstance(backend.context_window, int)
    assert backend.prompt_format in ("rules", "compact") and backend.speakers in ("names", "tags")


def test_an_object_missing_a_member_is_not_a_backend(local: ModelBackend) -> None:
    class Partial:
        def __getattr__(self, name: str):  # noqa: ANN204
            if name == "generate_batch":
                raise AttributeError(name)
            return getattr(local, name)

    assert not isinstance(Partial(), Backend)
