"""A small OpenAI-compatible server on 127.0.0.1 for the remote backend's tests: the network edge.

It runs on its own thread and event loop, so both blocking callers (``generate_batch`` on a test's
thread) and the test's own event loop can talk to it. Faults are scripted: ``faults`` is consumed one
entry per completion request (``500``, ``drop``, ``hang``); ``reject_fields`` makes it answer 422
"Unexpected fields" like ``transformers serve``; ``api_key`` makes it answer 401 to any other key.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any, Callable

from aiohttp import web

# What `transformers serve` accepts (the OpenAI fields); anything else is answered with 422.
OPENAI_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stream",
                 "seed", "stop", "n", "frequency_penalty", "presence_penalty", "logit_bias", "user"}


def free_port() -> int:
    """A port nothing listens on (for "server down")."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeOpenAI:
    def __init__(self, answer: Callable[[dict[str, Any]], str] | None = None, *, model: str = "fake-model",
                 max_model_len: int | None = 4096) -> None:
        self.answer = answer or (lambda body: "Alice and Bob planned the release for friday.")
        self.model = model
        self.max_model_len = max_model_len
        self.faults: list[str] = []
        self.row_faults: dict[int, list[str]] = {}  # by the request's max_tokens: faults for one row of a batch
        self.reject_fields: set[str] = set()
        self.api_key: str | None = None
        self.finish_reason = "stop"
        self.text_completions = True  # False: /v1/completions answers 404, as on a chat-only server
        self.requests: list[dict[str, Any]] = []  # completion bodies, in arrival order (rejected ones too)
        self.headers: list[dict[str, str]] = []
        self.models_calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.wait_for_concurrent = 0  # hold answers until this many requests are in flight at once
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai", daemon=True)
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self._crowd: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAI":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def release_hung(self) -> None:
        """Let every ``hang`` request finish."""
        assert self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    async def _start(self) -> None:
        self._release = asyncio.Event()
        self._crowd = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/v1/completions", self._complete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        assert self._release is not None and self._runner is not None
        self._release.set()
        await self._runner.cleanup()

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Invalid API key", "type": "invalid_request_error"}}, status=401)
        return None

    async def _models(self, request: web.Request) -> web.Response:
        self.models_calls += 1
        if (denied := self._unauthorized(request)) is not None:
            return denied
        entry: dict[str, Any] = {"id": self.model, "object": "model", "owned_by": "test"}
        if self.max_model_len is not None:
            entry["max_model_len"] = self.max_model_len
        return web.json_response({"object": "list", "data": [entry]})

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        text_api = request.path.endswith("/v1/completions")
        if text_api and not self.text_completions:
            return web.json_response({"detail": "Not Found"}, status=404)
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if (denied := self._unauthorized(request)) is not None:
            return denied
        unexpected = sorted(set(body) & self.reject_fields)
        if unexpected:
            return web.json_response({"detail": f"Unexpected fields: {set(unexpected)}"}, status=422)
        row = self.row_faults.get(body.get("max_tokens"), [])
        fault = row.pop(0) if row else self.faults.pop(0) if self.faults else ""
        if fault == "500":
            return web.json_response({"error": "internal"}, status=500)
        if fault == "drop":  # headers and half a body, then the connection closes
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = 500
            await resp.prepare(request)
            await resp.write(b'{"choices": [{"mess')
            assert request.transport is not None
            request.transport.close()
            return resp
        assert self._release is not None and self._crowd is not None
        if fault == "hang":
            await self._release.wait()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.max_in_flight >= self.wait_for_concurrent:
                self._crowd.set()  # a latch: once the crowd was there, everyone may answer
            await asyncio.wait_for(self._crowd.wait(), 30)
        finally:
            self.in_flight -= 1
        text = self.answer(body)
        choice: dict[str, Any] = {"text": text} if text_api else {"message": {"role": "assistant", "content": text}}
        payload = {"id": "x", "object": "text_completion" if text_api else "chat.completion", "model": body.get("model"),
                   "choices": [{"index": 0, **choice, "finish_reason": self.finish_reason}],
                   "usage": {"prompt_tokens": 11, "completion_tokens": len(text.split()), "total_tokens": 0}}
        return web.Response(body=json.dumps(payload).encode(), content_type="application/json")
