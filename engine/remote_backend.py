"""Generation on an OpenAI-compatible server (vLLM, llama.cpp's server, SGLang, ``transformers serve``).

``RemoteBackend`` has ``ModelBackend``'s interface, so the executor in front of it is unchanged:
admission, fairness, caps, timeouts, cancellation and metrics all work as with a local model.
Each row of a batch is its own ``/chat/completions`` request, sent concurrently from the backend's
own event-loop thread; the server batches concurrent requests continuously.

Failures are per row: connection errors, dropped connections, 429, 5xx and bodies that are not usable
JSON (not JSON, nested too deeply, over ``MAX_RESPONSE_BYTES``) are retried with backoff (bounded), then
that row fails with ``ServerUnavailable``; a 4xx is a setting or a bug and fails the row with
``ServerRejected`` at once, as does JSON that is not a completion. One exception: a 4xx that names a
sampling field (``transformers serve`` answers 422 "Unexpected fields" for ``top_k``) is retried once
without it, and the field is left out from then on; ``describe()`` lists the settings the server ignores.

Token counts use the served model's tokenizer when it can be loaded here (``INFERENCE_TOKENIZER``,
or ``INFERENCE_MODEL`` from the local Hugging Face cache), else ``estimate_tokens``.

Two ways to ask. With a local tokenizer that has a chat template, and a server that has the text
``/completions`` endpoint, the prompt is rendered here exactly as the in-process model sees it, with the
written start of the answer (``Prompt.prefix``), and sent as text: same prompt, same answer. Otherwise
(``INFERENCE_API=chat``, no local template, or no ``/completions``) the system and user messages go to
``/chat/completions`` and the server applies its template; a partial assistant message is not portable
across servers, so there the model writes its own start (``answer_prefix`` is False).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import re
import reprlib
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Sequence, TypeVar

from .generation import (
    GenerationError,
    GenerationResult,
    GenerationSettings,
    Prompt,
    RequestTimeout,
    ServerRejected,
    ServerUnavailable,
)
from .models import (
    WORD_JOINER,
    ModelLoadError,
    _special_token_pattern,
    check_fits,
    checked_row_limits,
    context_window_of,
    defuse_text,
)
from .netcheck import is_private_channel, url_origin
from .transcript import BARS, folded_spans

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

T = TypeVar("T")

# Without INFERENCE_CONTEXT, a max_model_len from the server or a local model config, assume this little.
DEFAULT_CONTEXT = 2048
BACKOFF_CAP_S = 8.0
HEALTH_TIMEOUT_S = 10.0
HEALTH_MAX_AGE_S = 30.0  # describe() refreshes an older health check in the background
POLL_S = 0.1  # how often a waiting batch reads the executor's per-row cancel flags
MESSAGE_OVERHEAD = 8  # estimated template tokens around each chat message
# A completion or a model list is a few KiB of JSON. A body past this is a broken or hostile server: reading
# it whole would hold that much memory for every row in flight, so it fails its row as a server error.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# Token counts from a server's "usage" are believed up to this; beyond it (or negative) they are counted here,
# so a bogus number cannot overflow the executor's float metrics.
MAX_USAGE_TOKENS = 2**31
# Request fields beyond the OpenAI core, by the setting they carry. A server that rejects one by name
# gets requests without it from then on. llama.cpp spells the penalty repeat_penalty: both are sent.
# A server that takes neither gets frequency_penalty = penalty - 1, which is how `transformers serve`
# maps it back (vLLM and OpenAI read frequency_penalty as a milder additive penalty: never sent with the others).
OPTIONAL_FIELDS: dict[str, str] = {
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "repeat_penalty": "repetition_penalty",
    "frequency_penalty": "repetition_penalty",
    "seed": "seed",
}
PENALTY_FIELDS = ("repetition_penalty", "repeat_penalty")
# Fields any server may reject without harm, beyond the settings': vLLM would add a second BOS to a
# rendered Llama 3 prompt without this one.
DROPPABLE_FIELDS = (*OPTIONAL_FIELDS, "add_special_tokens")
# Control-token spellings of common chat templates (ChatML, Llama 2 and 3, Gemma, Mistral, DeepSeek's
# <｜User｜> and <｜end▁of▁sentence｜>). Without the served model's tokenizer these are broken up, matched on
# the text's NFKC form (``defuse_folded``), so message text cannot open a turn on the server: vLLM reads
# special tokens inside message content. A model's own other special strings cannot be known without it.
GENERIC_CONTROL = re.compile(
    rf"<[{BARS}][^{BARS}<>]{{1,40}}[{BARS}]>|</?s>|\[/?INST\]|<(?:start|end)_of_turn>|<bos>|<eos>")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class RemoteConfig:
    url: str  # the /v1 base
    model: str = ""
    api_key: str = field(default="", repr=False)  # a secret: never in reprs or logs
    tokenizer: str = ""
    context: int = 0
    timeout_s: float = 300.0
    retries: int = 3
    backoff_s: float = 0.5  # the first retry's wait; doubles each time up to BACKOFF_CAP_S
    api: str = "auto"  # auto: text completions with the local chat template when possible; chat: always chat
    parallel: int = 1  # >1: the server batches concurrent requests itself; the executor sends rows as they come

    @property
    def origin(self) -> str:
        """scheme://host[:port], for logs and /status: no credentials, path (it may name a deployment) or query."""
        return url_origin(self.url)


def estimate_tokens(text: str) -> int:
    """An upper-side guess without the tokenizer: ASCII letters and spaces at 3 a token, any other ASCII
    character (digits, punctuation) one token, any other character one token per UTF-8 byte.

    English BPE averages about 4 characters a token; many tokenizers split numbers into single digits;
    a byte-level BPE that never saw a script (CJK, emoji) falls back to about a token per byte.
    """
    words = sum(1 for ch in text if ch.isascii() and (ch.isalpha() or ch.isspace()))
    other_ascii = sum(1 for ch in text if ch.isascii()) - words
    wide_bytes = sum(len(ch.encode("utf-8", "replace")) for ch in text if not ch.isascii())
    return math.ceil(words / 3) + other_ascii + wide_bytes


def load_tokenizer(spec: str, served_model: str) -> tuple[Any, int | None, str]:
    """(tokenizer or None, its model's context or None, a description for /status).

    An explicit ``spec`` that fails stops start-up; the served model's name is only tried from the cache.
    """
    from transformers import AutoConfig, AutoTokenizer

    from .models import resolve_source

    if spec:
        source = resolve_source(spec)
        kw: dict[str, Any] = {"gguf_file": source.gguf_file} if source.gguf_file else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, **kw)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"INFERENCE_TOKENIZER={spec!r} could not be loaded: {first}") from None
        location, local_only = source.location, False
    elif served_model:
        kw = {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(served_model, local_files_only=True)
        except Exception:  # noqa: BLE001 - not in the cache (or not a hub id): estimate instead
            return None, None, "estimated (no local tokenizer; set INFERENCE_TOKENIZER)"
        location, local_only = served_model, True
    else:
        return None, None, "estimated (no local tokenizer; set INFERENCE_TOKENIZER)"
    try:
        config = AutoConfig.from_pretrained(location, local_files_only=local_only, **kw)
    except Exception:  # noqa: BLE001 - a tokenizer-only folder: no context from it
        config = None
    return tokenizer, context_window_of(config, tokenizer), f"tokenizer {spec or served_model}"


class TokenCounter:
    """Counts with a local tokenizer when there is one, else ``estimate_tokens``. Thread-safe."""

    def __init__(self, tokenizer: Any | None) -> None:
        self.tokenizer = tokenizer
        self.exact = tokenizer is not None
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.own_special = _special_token_pattern(tokenizer) if tokenizer is not None else None
        self.lock = threading.RLock()  # a fast tokenizer used from two threads at once fails "Already borrowed"

    def defuse(self, text: str) -> str:
        """Control-token spellings broken up: a tokenizer's own strings exactly, as it reads them; without one,
        the generic ones in every spelling NFKC folds together."""
        if self.own_special is not None:
            return defuse_text(text, self.own_special)
        return defuse_folded(text, GENERIC_CONTROL)

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return estimate_tokens(text)
        with self.lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: list[dict[str, str]]) -> str:
        if self.has_chat_template:
            with self.lock:
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages)

    def count_messages(self, messages: list[dict[str, str]]) -> int:
        if self.has_chat_template:
            rendered = self.render(messages)
            with self.lock:
                return len(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        return sum(self.count(m["content"]) + MESSAGE_OVERHEAD for m in messages) + MESSAGE_OVERHEAD


class _LoopThread:
    """A private event loop on a daemon thread: the worker thread hands it coroutines and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class _Rejected(Exception):
    """A 4xx answer, with its body."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class _Retryable(Exception):
    """A failure worth another try: no connection, a dropped one, 429 or 5xx."""


def connect(config: RemoteConfig) -> "RemoteBackend":
    """Check the server, pick the model and context, load the tokenizer. Raises ``ModelLoadError`` (one line)."""
    if config.api_key and not is_private_channel(config.url):  # config refuses this too; never send it anyway
        raise ModelLoadError("INFERENCE_API_KEY is only sent over https or to this machine")
    backend = RemoteBackend(config)
    try:
        backend.start()
    except BaseException:
        backend.close()
        raise
    return backend


class RemoteBackend:
    """``engine.backend.Backend`` over an OpenAI-compatible ``/v1`` server."""

    is_encoder_decoder = False
    has_chat_template = True  # the template is applied (here for text completions, else by the server)
    dtype_name = "served"
    model = None  # no local weights
    prompt_format = "rules"  # engine.prompts.RULES: a served model's tuning is not known here
    speakers = "names"  # engine.speakers.NAMES, likewise
    prefix_allowed = True  # False for an adapter tuned to answer without a written start

    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        self.base_name = self.name = config.model or "?"
        self.adapter = None
        self.device = f"remote {config.origin}"
        self.context_window = config.context or DEFAULT_CONTEXT
        self.parallel_rows = max(1, config.parallel)
        self.counter = TokenCounter(None)
        self.tokenizer_source = "estimated"
        self.tokenizer_lock = self.counter.lock
        self.text_completions = False  # True: prompts rendered here and sent to /completions (see the module doc)
        self.ignored_fields: set[str] = set()  # request fields this server rejected; left out from now on
        self._reported: set[str] = set()  # 4xx answers already logged
        self._health: tuple[bool, float, str] = (False, 0.0, "not checked yet")
        self._health_refresh: concurrent.futures.Future[Any] | None = None
        self._session: "aiohttp.ClientSession | None" = None
        self._loop = _LoopThread("recap-remote")
        self._closed = False

    @property
    def tokenizer(self) -> Any:
        return self.counter.tokenizer

    # ---- start-up ----

    def start(self) -> None:
        try:
            listing = self._loop.submit(self._with_retries(self._get_models, "GET /models")).result()
        except _Rejected as exc:
            raise ModelLoadError(f"INFERENCE_URL {self.config.origin} refused the model list "
                                 f"(HTTP {exc.status}{_hint(exc.status)}): {_snippet(exc.body)}") from None
        except ServerUnavailable as exc:
            raise ModelLoadError(f"INFERENCE_URL {self.config.origin} is not answering ({exc}). "
                                 "Start the inference server or fix INFERENCE_URL.") from None
        except RequestTimeout:
            raise ModelLoadError(f"INFERENCE_URL {self.config.origin} did not answer within {HEALTH_TIMEOUT_S:g}s.") from None
        listed = listing.get("data") if isinstance(listing.get("data"), list) else []
        models = [m for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)]
        chosen = next((m for m in models if m["id"] == self.config.model), None)
        if not self.config.model:
            if not models:
                raise ModelLoadError(f"INFERENCE_URL {self.config.origin} lists no models; set INFERENCE_MODEL.")
            chosen = models[0]
            self.base_name = self.name = chosen["id"]
        elif chosen is None and models:  # some servers answer for any name; say so rather than refuse
            log.warning("INFERENCE_MODEL=%r is not among the models %s lists (%s); asking for it anyway",
                        self.config.model, self.config.origin, ", ".join(m["id"] for m in models[:5]))
        tokenizer, tokenizer_context, self.tokenizer_source = load_tokenizer(self.config.tokenizer, self.name)
        self.counter = TokenCounter(tokenizer)
        self.tokenizer_lock = self.counter.lock
        served_context = chosen.get("max_model_len") if chosen else None
        self.context_window = (self.config.context
                               or (served_context if isinstance(served_context, int) and served_context > 0 else 0)
                               or tokenizer_context or DEFAULT_CONTEXT)
        if self.config.api == "auto" and self.counter.has_chat_template:
            self.text_completions = self._loop.submit(self._has_text_completions()).result()
        self._set_health(True, "ok")
        log.info("inference server %s: model %s, context %d tokens, token counts %s, %s",
                 self.config.origin, self.name, self.context_window, self.tokenizer_source, self.api_name)

    @property
    def answer_prefix(self) -> bool:
        """Whether prompts may write the start of the answer: only when the prompt is rendered here (and the
        model was not tuned to answer without one: ``prefix_allowed``)."""
        return self.text_completions and self.prefix_allowed

    @property
    def api_name(self) -> str:
        return "text completions with the local chat template" if self.text_completions else "chat completions"

    async def _has_text_completions(self) -> bool:
        """One token from /completions: servers without that endpoint get chat requests instead."""
        probe = {"model": self.name, "prompt": "Hello", "max_tokens": 1, "temperature": 0.0}
        try:
            await self._with_retries(lambda: self._post("/completions", probe), "POST /completions")
        except (_Rejected, GenerationError) as exc:
            log.info("%s: no usable /completions (%s); using chat completions", self.config.origin, exc)
            return False
        return True

    # ---- tokens ----

    def _messages(self, prompt: Prompt) -> list[dict[str, str]]:
        def clean(text: str) -> str:
            return self.defuse(_LONE_SURROGATE.sub("\ufffd", text))

        return [{"role": "system", "content": clean(prompt.system)}, {"role": "user", "content": clean(prompt.user)}]

    def render(self, prompt: Prompt) -> str:
        """The prompt as the local tokenizer's template renders it, with the answer's start when it is sent."""
        prefix = self.defuse(_LONE_SURROGATE.sub("\ufffd", prompt.prefix)) if self.answer_prefix else ""
        return self.counter.render(self._messages(prompt)) + prefix

    def defuse(self, text: str) -> str:
        return self.counter.defuse(text)

    def count_tokens(self, text: str) -> int:
        return self.counter.count(text)

    def prompt_tokens(self, prompt: Prompt) -> int:
        if self.text_completions:
            return self.counter.count(self.render(prompt))
        return self.counter.count_messages(self._messages(prompt))

    def check_fits(self, prompt_tokens: int, settings: GenerationSettings) -> None:
        check_fits(self.context_window, False, prompt_tokens, settings)

    # ---- generation ----

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        settings: GenerationSettings,
        *,
        row_max_new_tokens: Sequence[int] | None = None,
        stop_rows: Callable[[], Sequence[bool]] | None = None,
    ) -> list[GenerationResult | GenerationError]:
        """One concurrent request per row. A row that fails alone comes back as its ``GenerationError``
        (the executor fails that caller only); a row whose ``stop_rows`` flag is set is abandoned."""
        if not prompts:
            return []
        limits = checked_row_limits(len(prompts), settings, row_max_new_tokens)
        started = time.perf_counter()
        futures = [self._loop.submit(self._complete(prompt, settings.with_(max_new_tokens=limit)))
                   for prompt, limit in zip(prompts, limits)]
        pending = set(futures)
        while pending:
            _, pending = concurrent.futures.wait(pending, timeout=POLL_S if stop_rows is not None else None)
            if stop_rows is not None and pending:
                for future, stop in zip(futures, stop_rows()):
                    if stop and not future.done():
                        future.cancel()  # cancels the request's task: the connection closes, the server aborts
        elapsed = time.perf_counter() - started
        results: list[GenerationResult | GenerationError] = []
        for prompt, future in zip(prompts, futures):
            if future.cancelled():
                results.append(GenerationResult("", 0, 0, False, elapsed, len(prompts)))
                continue
            error = future.exception()
            if isinstance(error, GenerationError):
                results.append(error)
            elif error is not None:
                raise error  # a bug here: the executor treats it as a crash
            else:
                text, prompt_tokens, new_tokens, finished = future.result()
                if prompt_tokens is None:
                    prompt_tokens = self.prompt_tokens(prompt)
                if new_tokens is None:
                    new_tokens = self.count_tokens(text)
                results.append(GenerationResult(text, prompt_tokens, new_tokens, finished, elapsed, len(prompts)))
        return results

    def payload(self, prompt: Prompt, settings: GenerationSettings) -> dict[str, Any]:
        """The request body for one row; greedy is temperature 0 with no sampling fields."""
        asked: dict[str, Any] = ({"prompt": self.render(prompt), "add_special_tokens": False} if self.text_completions
                                 else {"messages": self._messages(prompt)})
        body: dict[str, Any] = {"model": self.name, **asked, "stream": False,
                                "max_tokens": settings.max_new_tokens,
                                "temperature": settings.temperature if settings.sampling else 0.0,
                                "repetition_penalty": settings.repetition_penalty,
                                "repeat_penalty": settings.repetition_penalty}
        if all(f in self.ignored_fields for f in PENALTY_FIELDS) and settings.repetition_penalty > 1.0:
            body["frequency_penalty"] = round(settings.repetition_penalty - 1.0, 4)
        if settings.sampling:
            body.update(top_p=settings.top_p, top_k=settings.top_k)
            if settings.seed is not None:
                body["seed"] = settings.seed
        return body

    async def _complete(self, prompt: Prompt, settings: GenerationSettings) -> tuple[str, int | None, int | None, bool]:
        """(text, prompt tokens, new tokens, finished) for one row, retried as the module says."""
        dropped_once = False
        while True:
            sent = {k: v for k, v in self.payload(prompt, settings).items() if k not in self.ignored_fields}
            try:
                answer = await self._with_retries(lambda: self._post(self._endpoint, sent), "a completion")
            except _Rejected as exc:
                named = [k for k in sent if k in DROPPABLE_FIELDS and re.search(rf"\b{k}\b", exc.body)]
                if named and not dropped_once and exc.status in (400, 422):
                    dropped_once = True
                    self._ignore(named, exc.status)
                    continue
                self._report_rejection(exc)
                raise ServerRejected(f"the model server answered HTTP {exc.status}{_hint(exc.status)}: {_snippet(exc.body)}") from None
            return _parse_completion(answer)

    @property
    def _endpoint(self) -> str:
        return "/completions" if self.text_completions else "/chat/completions"

    def _ignore(self, fields: list[str], status: int) -> None:
        new = [f for f in fields if f not in self.ignored_fields]
        self.ignored_fields.update(fields)
        if new:
            log.warning("%s rejected the request field(s) %s (HTTP %d); sending requests without them from now on",
                        self.config.origin, ", ".join(new), status)

    def _report_rejection(self, exc: _Rejected) -> None:
        key = f"{exc.status}:{exc.body[:200]}"
        if key not in self._reported:  # once per kind of answer, not once per request
            self._reported.add(key)
            # The answer's text goes to DEBUG only: a server may quote the request, and so the conversation.
            log.error("%s refused a request with HTTP %d%s (its answer is logged at DEBUG)", self.config.origin,
                      exc.status, _hint(exc.status))
            log.debug("%s answered: %s", self.config.origin, _snippet(exc.body))

    @property
    def ignored_settings(self) -> list[str]:
        """Admin settings this server does not apply: every field that carries the setting was rejected."""
        carried: dict[str, list[str]] = {}
        for field, setting in OPTIONAL_FIELDS.items():
            carried.setdefault(setting, []).append(field)
        return sorted(s for s, names in carried.items() if all(n in self.ignored_fields for n in names))

    # ---- HTTP, on the backend's loop ----

    async def _with_retries(self, call: Callable[[], Coroutine[Any, Any, T]], what: str) -> T:
        """``call`` again after a retryable failure, waiting backoff_s, 2x, 4x... (capped); then ServerUnavailable."""
        attempt = 0
        while True:
            try:
                value = await call()
            except _Retryable as exc:
                attempt += 1
                if attempt > self.config.retries:
                    self._set_health(False, str(exc))
                    raise ServerUnavailable(f"{exc}; gave up after {attempt} tries") from None
                delay = min(BACKOFF_CAP_S, self.config.backoff_s * 2 ** (attempt - 1))
                log.info("%s failed (%s); retry %d of %d in %.1fs", what, exc, attempt, self.config.retries, delay)
                await asyncio.sleep(delay)
                continue
            self._set_health(True, "ok")
            return value

    async def _session_now(self) -> "aiohttp.ClientSession":
        import aiohttp

        if self._session is None:
            headers = {"Accept": "application/json"}
            if self.config.api_key:
                headers["Authorization"] = f"Bearer {self.config.api_key}"
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    async def _request(self, method: str, path: str, body: dict[str, Any] | None, timeout_s: float) -> Any:
        import aiohttp

        session = await self._session_now()
        try:
            async with session.request(method, self.config.url + path, json=body,
                                       timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                text = await _read_capped(resp)
                status = resp.status
        except TimeoutError:
            raise RequestTimeout(f"the model server did not answer within {timeout_s:g}s") from None
        except aiohttp.ClientError as exc:  # refused, reset, dropped mid-answer
            raise _Retryable(_connection_error(exc)) from None
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}: {_snippet(text)}")
        if status >= 400:
            raise _Rejected(status, text)
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # not JSON, nested deeper than json parses, or a number too long
            raise _Retryable(f"HTTP {status} with a body that is not usable JSON: {_snippet(text)}") from None

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        return await self._request("POST", path, body, self.config.timeout_s)

    async def _get_models(self) -> dict[str, Any]:
        answer = await self._request("GET", "/models", None, min(HEALTH_TIMEOUT_S, self.config.timeout_s))
        return answer if isinstance(answer, dict) else {}

    # ---- health and status ----

    def _set_health(self, ok: bool, detail: str) -> None:
        self._health = (ok, time.monotonic(), detail)

    async def _check_health(self) -> None:
        try:
            await self._get_models()
        except _Rejected as exc:
            self._set_health(False, f"HTTP {exc.status}{_hint(exc.status)}")
        except (_Retryable, GenerationError) as exc:
            self._set_health(False, str(exc))
        else:
            self._set_health(True, "ok")

    def describe(self) -> dict[str, Any]:
        """Facts for /status. Never blocks: a health check older than HEALTH_MAX_AGE_S is refreshed in the background."""
        ok, checked, detail = self._health
        age = time.monotonic() - checked
        if age > HEALTH_MAX_AGE_S and not self._closed and (self._health_refresh is None or self._health_refresh.done()):
            self._health_refresh = self._loop.submit(self._check_health())
        return {"model": self.name, "adapter": None, "device": self.device, "dtype": self.dtype_name,
                "context_window": self.context_window, "server": self.config.origin, "api": self.api_name,
                "server_ok": ok, "server_status": detail, "checked_s_ago": round(age, 1),
                "tokens": self.tokenizer_source, "ignored_settings": self.ignored_settings}

    def close(self) -> None:
        """Close the connections and stop the loop thread; requests still running are cancelled."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            if self._session is not None:
                await self._session.close()

        try:
            self._loop.submit(shutdown()).result(timeout=10)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.debug("remote backend shutdown: %s", exc)
        self._loop.stop()


def _parse_completion(answer: Any) -> tuple[str, int | None, int | None, bool]:
    """(text, prompt tokens, new tokens, finished); any other shape fails only this row."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    if isinstance(choice, dict) and "text" in choice:  # /completions
        text = choice["text"]
    elif isinstance(choice, dict) and isinstance(choice.get("message"), dict):  # /chat/completions
        text = choice["message"].get("content")  # None: an answer without text
    else:
        raise _no_completion(answer)
    if text is not None and not isinstance(text, str):
        raise _no_completion(answer)
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    prompt_tokens, new_tokens = _token_count(usage.get("prompt_tokens")), _token_count(usage.get("completion_tokens"))
    return (text or "").strip(), prompt_tokens, new_tokens, choice.get("finish_reason") != "length"


def _no_completion(answer: Any) -> ServerRejected:
    # reprlib: bounded in depth and length, whatever the server sent
    return ServerRejected(f"the model server's answer has no completion: {_snippet(reprlib.repr(answer))}")


def _token_count(value: Any) -> int | None:
    """A server-reported token count when it is believable, else None (the backend counts instead)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_USAGE_TOKENS
    return value if ok else None


async def _read_capped(resp: "aiohttp.ClientResponse") -> str:
    """The body as text, or ``_Retryable`` once it passes MAX_RESPONSE_BYTES (the rest is never read)."""
    too_big = _Retryable(f"HTTP {resp.status} with a body over {MAX_RESPONSE_BYTES // 2**20} MiB")
    if resp.content_length is not None and resp.content_length > MAX_RESPONSE_BYTES:
        raise too_big
    body = bytearray()
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise too_big
    return body.decode("utf-8", errors="replace")  # JSON is UTF-8 (RFC 8259); error bodies are only logged


def defuse_folded(text: str, pattern: re.Pattern[str]) -> str:
    """``defuse_text`` matched on the NFKC form of ``text`` (``folded_spans``), the joiner put into the text as
    written. Ends: every spelling starts with a character ("<", "[") that a joiner after it stops matching."""
    while spans := folded_spans(pattern, text):
        pieces, last = [], 0
        for start, _ in spans:
            pieces += [text[last:start + 1], WORD_JOINER]
            last = start + 1
        text = "".join(pieces) + text[last:]
    return text


def _connection_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # one line, for start-up errors and logs
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _snippet(body: str) -> str:
    """A short, one-line excerpt of a server's answer for logs and errors."""
    return " ".join(body.split())[:300] or "(empty)"


def _hint(status: int) -> str:
    if status in (401, 403):
        return " - check INFERENCE_API_KEY"
    if status == 404:
        return " - check INFERENCE_URL (it should end in /v1) and INFERENCE_MODEL"
    return ""
