"""Types shared by the model backend, the executor and the summarizer.

Nothing here imports torch or discord: callers on the event loop can build
requests and catch these errors without pulling in the model stack.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from .tunables import (
    MAX_NEW_TOKENS,
    REPETITION_PENALTY,
    SAMPLING,
    TEMPERATURE,
    TOP_K,
    TOP_P,
    InvalidTunable,
)


class GenerationError(Exception):
    """Base of every error the executor or summarizer raises on purpose."""

    user_message = "Something went wrong while generating the summary."


class InvalidRequest(GenerationError):
    """The request can never succeed (empty prompt, too long, bad settings). Raised before the model sees it."""

    user_message = "That request can't be summarized."


class Overloaded(GenerationError):
    """The queue is full (or this server/member holds its share of it). Fails at once; retry later."""

    user_message = "The summarizer is busy right now."

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimeout(GenerationError):
    """The request did not finish before its deadline."""

    user_message = "The summary took too long and was stopped."


class ExecutorClosed(GenerationError):
    """The executor is shutting down or closed."""

    user_message = "The summarizer is shutting down."


class EngineDead(GenerationError):
    """The worker crashed; every waiter gets this. The executor restarts the worker."""

    user_message = "The summarizer hit an internal error and is restarting."


class OutOfMemory(GenerationError):
    """The model ran out of memory on this request even alone."""

    user_message = "This conversation is too large for the model's memory."


class ServerUnavailable(GenerationError):
    """The inference server (INFERENCE_URL) kept failing: connection errors or 5xx, after the retries."""

    user_message = "The model server is not answering right now. Try again in a minute."


class ServerRejected(GenerationError):
    """The inference server refused the request with a 4xx: a setting or a bug, so it is not retried."""

    user_message = "The model server refused this request; the bot's logs say why."


class SummaryFailed(GenerationError):
    """The model produced nothing usable (empty, repetition loop, echo) even after one retry."""

    user_message = "The model could not produce a usable summary for this conversation."


@dataclass(frozen=True)
class GenerationSettings:
    """Exactly what reaches ``generate``. Validated: a bad value raises ``InvalidRequest``."""

    max_new_tokens: int = 160  # the medium length preset's
    sampling: bool = SAMPLING.default  # the admins' setting of the same name; transformers calls it do_sample
    temperature: float = TEMPERATURE.default
    top_p: float = TOP_P.default
    top_k: int = TOP_K.default
    repetition_penalty: float = REPETITION_PENALTY.default
    seed: int | None = None  # for sampling; None: nondeterministic

    def __post_init__(self) -> None:
        # The tunables' own rule (the one admins and flags meet), as the engine's gate.
        try:
            SAMPLING.check(self.sampling)
            for tunable in (TEMPERATURE, TOP_P, TOP_K, REPETITION_PENALTY):
                tunable.check(getattr(self, tunable.name))
        except InvalidTunable as exc:
            raise InvalidRequest(str(exc)) from None
        # Any whole number of tokens up to the tunable's maximum: internal requests (a warm-up) ask for
        # fewer than admins may set; "0: from the preset" is resolved before a request is built.
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_NEW_TOKENS.maximum:
            raise InvalidRequest(f"max_new_tokens cannot be {n!r} (allowed: 1 to {MAX_NEW_TOKENS.maximum:g}).")

    def group_key(self) -> tuple[Any, ...]:
        """Requests batch together only when everything but max_new_tokens agrees."""
        if not self.sampling:
            return (False, self.repetition_penalty)
        return (True, self.temperature, self.top_p, self.top_k, self.repetition_penalty, self.seed)

    def to_generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.sampling,  # transformers' name for it
            "repetition_penalty": self.repetition_penalty,
        }
        if self.sampling:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:
            # Greedy: neutralise sampling knobs so transformers does not warn or apply them.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def with_(self, **changes: Any) -> "GenerationSettings":
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "GenerationSettings | None":
        """The settings ``as_dict`` wrote (a stored summary's), unknown keys ignored; None when it holds
        none or they no longer pass the checks (stored by an older version)."""
        if not isinstance(data, dict):
            return None
        if "do_sample" in data and "sampling" not in data:  # summaries stored before the field took the setting's name
            data = {**data, "sampling": data["do_sample"]}
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known) if known else None
        except (InvalidRequest, TypeError):
            return None


@dataclass(frozen=True)
class Prompt:
    """What the summarizer asks: instructions (system) kept apart from the data (user).

    The backend renders it with the model's chat template (causal LMs) or as one
    plain input (encoder-decoder models).
    """

    system: str
    user: str
    # The start of the answer, written for the model (guided decoding); causal models continue it.
    # The generated text excludes it. Encoder-decoder models ignore it.
    prefix: str = ""


@dataclass
class GenerationRequest:
    prompt: Prompt
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    guild: str = "local"  # fairness key: a server id, or "local" for the CLI
    user: str = "local"
    priority: int = 0  # 0 interactive; higher numbers run later (digests use 1)
    timeout: float | None = None  # seconds; None: the executor's default
    job: str | None = None  # chunks of one map-reduce share a job id so they batch together
    on_queue: Callable[["QueueStatus"], None] | None = None  # called on the event loop


@dataclass(frozen=True)
class QueueStatus:
    position: int  # 1 = next to run
    eta_s: float | None


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    new_tokens: int
    finished: bool  # False when max_new_tokens cut the generation
    latency_s: float = 0.0
    batch_size: int = 1


class ModelLoadError(RuntimeError):
    """The model could not be loaded. The message says what to do."""
