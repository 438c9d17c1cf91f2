"""The adapter format, written and read in one place (as vLLM keeps adapters in ``vllm/lora/``).

An adapter folder holds peft's ``adapter_config.json`` and ``adapter_model.safetensors`` plus
``recap_adapter.json``: the base model's fingerprint, how the adapter is prompted (``prompt_format``,
``speakers``, ``answer_prefix``) and how it was trained. ``finetune`` writes it with ``save_adapter``;
``engine.models.load_backend`` checks it with ``read_adapter_meta`` and merges it with ``apply_adapter``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .generation import ModelLoadError
from .prompts import RULES, check_prompt_format
from .speakers import NAMES, check_speakers

FORMAT = 1

# The adapter `finetune` trained for the embedded model on DialogSum; MODEL_ADAPTER=auto uses it.
EMBEDDED_ADAPTER_DIR = Path(__file__).parent / "data" / "adapter-smollm2-dialogsum"
# Written by `finetune` beside peft's files: what the adapter was trained on and how it is prompted.
ADAPTER_META = "recap_adapter.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", ADAPTER_META)
# Config fields that must match between the adapter's base model and the model it is applied to.
BASE_FINGERPRINT = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "d_model", "encoder_layers", "decoder_layers")


def resolve_adapter(model: str, adapter: str) -> Path | None:
    """``MODEL_ADAPTER``: ``auto`` (the shipped adapter for the embedded model, else none), ``none``, or a directory."""
    value = adapter.strip()
    if value.lower() == "none" or (value.lower() == "auto" and model != "embedded"):
        return None
    if value.lower() == "auto":
        return EMBEDDED_ADAPTER_DIR if (EMBEDDED_ADAPTER_DIR / ADAPTER_META).is_file() else None
    return Path(value).expanduser()


def base_fingerprint(config: Any) -> dict[str, Any]:
    return {key: getattr(config, key) for key in BASE_FINGERPRINT if isinstance(getattr(config, key, None), (int, str))}


def read_adapter_meta(folder: Path) -> dict[str, Any]:
    """The adapter's ``recap_adapter.json``; raises ``ModelLoadError`` naming what is missing."""
    if not folder.is_dir():
        raise ModelLoadError(f"MODEL_ADAPTER={str(folder)!r}: no such directory (use a folder written by `finetune`, or none).")
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(f"MODEL_ADAPTER={str(folder)!r} is not a finetune adapter: {', '.join(missing)} missing.")
    try:
        meta = json.loads((folder / ADAPTER_META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"MODEL_ADAPTER={str(folder)!r}: {ADAPTER_META} is unreadable ({exc}).") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("base"), dict):
        raise ModelLoadError(f"MODEL_ADAPTER={str(folder)!r}: {ADAPTER_META} has no base model description.")
    try:
        adapter_prompt_format(meta)
        adapter_speakers(meta)
    except ValueError as exc:
        raise ModelLoadError(f"MODEL_ADAPTER={str(folder)!r}: {ADAPTER_META} names an {exc}.") from None
    return meta


def _meta_choice(meta: dict[str, Any], key: str, default: str, check: Callable[[str], str]) -> str:
    """``meta[key]`` checked by ``check`` (``ValueError`` naming the allowed values), ``default`` when absent."""
    value = meta.get(key, default)
    return check(value if isinstance(value, str) else repr(value))


def adapter_prompt_format(meta: dict[str, Any]) -> str:
    """The prompt wording the adapter was trained on; ``rules`` when the metadata names none (the
    adapters written before there was a choice were trained on it)."""
    return _meta_choice(meta, "prompt_format", RULES, check_prompt_format)


def adapter_speakers(meta: dict[str, Any]) -> str:
    """How the adapter learned to see people (``engine.speakers``); ``names`` when the metadata says nothing."""
    return _meta_choice(meta, "speakers", NAMES, check_speakers)


def write_adapter_meta(folder: Path, meta: dict[str, Any]) -> Path:
    """Write ``recap_adapter.json``, the file ``read_adapter_meta`` reads back."""
    adapter_prompt_format(meta)  # never write a file the loader would refuse
    adapter_speakers(meta)
    path = folder / ADAPTER_META
    path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def check_base(folder: Path, meta: dict[str, Any], config: Any) -> None:
    """Raise ``ModelLoadError`` (one line) when the adapter was trained for another base than ``config``'s."""
    have = base_fingerprint(config)
    wanted = meta["base"]
    differs = [f"{k}: adapter {wanted[k]!r}, model {have.get(k)!r}" for k in wanted if have.get(k) != wanted[k]]
    if differs:
        raise ModelLoadError(
            f"MODEL_ADAPTER={str(folder)!r} was trained for another base model ({meta.get('base_name', '?')}; "
            f"{'; '.join(differs[:3])}). Use the adapter with its own MODEL, or MODEL_ADAPTER=none."
        )


def apply_adapter(model: Any, folder: Path) -> tuple[Any, dict[str, Any]]:
    """Merge a LoRA adapter into ``model``'s weights (serving speed unchanged). Returns (model, meta)."""
    meta = read_adapter_meta(folder)
    check_base(folder, meta, model.config)
    try:
        from peft import PeftModel

        merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    except ImportError as exc:
        raise ModelLoadError(f"MODEL_ADAPTER needs the peft package ({exc}); run `make install`.") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"MODEL_ADAPTER={str(folder)!r} could not be applied: {first}") from None
    return merged, meta


def save_adapter(peft_model: Any, folder: Path, *, name: str, base_name: str, base: dict[str, Any],
                 prompt_format: str, speakers: str, training: dict[str, Any]) -> Path:
    """Write a trained peft model's adapter and its ``recap_adapter.json`` into ``folder``.

    ``training`` is what the model card and ``/status`` report (rank, steps, data, speed...); the
    format's own keys are written after it, so it cannot change them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.peft_config["default"].base_model_name_or_path = base_name
    peft_model.save_pretrained(str(folder), save_embedding_layers=False)
    meta = {
        **training,
        "format": FORMAT,
        "name": name,
        "base_name": base_name,
        "base": base,
        "answer_prefix": False,  # tuned to answer without a written start
        "prompt_format": prompt_format,
        "speakers": speakers,
    }
    write_adapter_meta(folder, meta)
    return folder
