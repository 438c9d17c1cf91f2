"""The one interface every model backend implements.

A backend is a model in this process (``engine.models.ModelBackend``) or on a serving engine
(``engine.remote_backend.RemoteBackend``). The executor, its worker and the summarizer depend on
this protocol only, never on a concrete backend, as vLLM's engines all implement ``EngineClient``.
``tests/test_backend_protocol.py`` checks that both backends implement every member with the
same call signature.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from .generation import GenerationResult, GenerationSettings, Prompt


@runtime_checkable
class Backend(Protocol):
    # ---- facts: what /status shows and what the prompts and budgets are built from ----
    @property
    def name(self) -> str: ...  # shown to people: the base model, plus " + adapter NAME" when one is merged

    @property
    def base_name(self) -> str: ...

    @property
    def adapter(self) -> str | None: ...  # the merged fine-tuning adapter's name, if any

    @property
    def device(self) -> str: ...  # cpu, cuda, cuda:N, mps, or "remote scheme://host:port"

    @property
    def dtype_name(self) -> str: ...

    @property
    def context_window(self) -> int: ...  # prompt + answer tokens the model reads at most

    @property
    def is_encoder_decoder(self) -> bool: ...

    @property
    def has_chat_template(self) -> bool: ...

    @property
    def answer_prefix(self) -> bool: ...  # prompts may write the start of the answer

    @property
    def prompt_format(self) -> str: ...  # engine.prompts: the wording the model was tuned on

    @property
    def speakers(self) -> str: ...  # engine.speakers: names, or the speaker tags an adapter learned

    @property
    def parallel_rows(self) -> int: ...  # rows it generates at once across concurrent calls; 1: one batch at a time

    @property
    def model(self) -> Any: ...  # the local weights; None for a served model

    @property
    def tokenizer(self) -> Any: ...  # None when a served model's tokens are estimated

    @property
    def tokenizer_lock(self) -> Any: ...  # held around every tokenizer call (fast tokenizers are not thread-safe)

    # ---- prompts and token budgets (thread-safe, cheap for short texts) ----
    def render(self, prompt: Prompt) -> str: ...

    def defuse(self, text: str) -> str: ...  # breaks up control-token spellings in message text

    def count_tokens(self, text: str) -> int: ...

    def prompt_tokens(self, prompt: Prompt) -> int: ...

    def check_fits(self, prompt_tokens: int, settings: GenerationSettings) -> None: ...  # raises InvalidRequest

    # ---- generation: the executor's worker thread only ----
    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        settings: GenerationSettings,
        *,
        row_max_new_tokens: Sequence[int] | None = None,
        stop_rows: Callable[[], Sequence[bool]] | None = None,
    ) -> list[GenerationResult]: ...

    def describe(self) -> dict[str, Any]: ...  # what /status and the metrics show

    def close(self) -> None: ...  # drops the weights or the connections
