"""ENGINE=llama.cpp: the embedded GGUF model, with its adapter, on a ``llama-server`` this process owns.

``make llama-cpp`` builds ``llama-server`` from the llama.cpp source that the registry's
``llama-cpp-python`` sdist vendors, into ``LLAMA_CPP_DIR`` (default ``.llama.cpp/``), with that source
kept beside it for the LoRA converter. Nothing else is downloaded.

Why a server process rather than the ``llama-cpp-python`` binding in the model worker: the server
interleaves concurrent requests (``--parallel`` slots), where the binding's ``Llama`` object decodes one
sequence at a time; it dies alone (a crash in native code cannot take the bot down with it); and the
OpenAI-compatible backend already carries settings, cancellation and health (``bench/llama_routes.py``
has the measured figures).

``start_llama_cpp`` (the executor's backend factory) checks the build, the GGUF and the adapter,
converts the adapter to a GGUF LoRA once with llama.cpp's own ``convert_lora_to_gguf.py`` (cached by
the adapter's bytes), merges it into a Q8_0 copy of the model once (``engine.llama_gguf``), starts the
server on that copy on a free localhost port and returns a ``LlamaCppBackend``:
the OpenAI-compatible ``RemoteBackend`` with the embedded tokenizer (prompts rendered here, exactly as
the torch path renders them) and the adapter's prompt format and speakers. When the server dies, the
batch that sees it raises ``EngineCrashed``: the executor fails every waiter with ``EngineDead`` and
calls the factory again, which starts a fresh server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .adapters import adapter_prompt_format, adapter_speakers, check_base, read_adapter_meta, resolve_adapter
from .generation import GenerationError, GenerationResult, GenerationSettings, ModelLoadError, Prompt
from .llama_gguf import drop_stale, served_model
from .models import ModelSource, _gguf_cache_dir, resolve_source
from .remote_backend import RemoteBackend, RemoteConfig

log = logging.getLogger(__name__)

# The llama-cpp-python sdist whose vendor/llama.cpp `make llama-cpp` builds (the Makefile names it too).
LLAMA_CPP_PYTHON = "0.3.36"
BUILD_COMMAND = "make llama-cpp"
SERVER_BINARY = "llama-server"
CONVERTER = "convert_lora_to_gguf.py"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
CONVERT_TIMEOUT_S = 900.0
LOG_NAME = "llama-server.log"


class EngineCrashed(RuntimeError):
    """The llama-server process died. Not a ``GenerationError``: the executor treats it as a crash."""


@dataclass(frozen=True)
class LlamaCppConfig:
    home: Path  # LLAMA_CPP_DIR: bin/llama-server and src/ (the vendored llama.cpp) from `make llama-cpp`
    model: str = "embedded"
    model_file: str = ""
    adapter: str = "auto"
    cache_dir: Path | None = None  # converted adapters and the server's log; None: a folder in LLAMA_CPP_DIR
    threads: int = 0  # 0: every core
    slots: int = 8  # requests the server decodes together
    context: int = 4096  # tokens per slot
    timeout_s: float = 300.0
    # True: serve a Q8_0 copy with the adapter merged (engine.llama_gguf); False: the GGUF as it is, with
    # the adapter beside it (--lora). Only bench/llama_routes.py --weights compares the two.
    merged: bool = True


@dataclass(frozen=True)
class LlamaBuild:
    server: Path
    source: Path  # the vendored llama.cpp: convert_lora_to_gguf.py, conversion/, gguf-py/


def find_build(home: Path) -> LlamaBuild:
    """The built server and the converter's source, or ``ModelLoadError`` naming the command that builds them."""
    server = home / "bin" / SERVER_BINARY
    source = home / "src"
    if not (server.is_file() and os.access(server, os.X_OK)):
        raise ModelLoadError(f"ENGINE=llama.cpp but llama.cpp is not built in {home}: run `{BUILD_COMMAND}` "
                             "(a few minutes, once), or set ENGINE=torch.")
    if not (source / CONVERTER).is_file() or not (source / "gguf-py").is_dir():
        raise ModelLoadError(f"The llama.cpp build in {home} is incomplete ({CONVERTER} or gguf-py missing): "
                             f"run `{BUILD_COMMAND}` again.")
    return LlamaBuild(server, source)


def gguf_model(model: str, model_file: str) -> tuple[Path, str]:
    """(the GGUF file, its display name). llama.cpp runs GGUF files only."""
    source = resolve_source(model, model_file)
    path = Path(source.location) / (source.gguf_file or "")
    if not source.gguf_file or not path.is_file():
        raise ModelLoadError(f"ENGINE=llama.cpp runs GGUF models: MODEL=embedded, a .gguf file, or a directory with "
                             f"one .gguf file (MODEL={model!r} is not one). Use ENGINE=torch for other models.")
    return path, source.display_name


def base_files(path: Path, cache: Path) -> Path:
    """A folder with the GGUF model's config.json and tokenizer, read from the GGUF once and cached by its
    path, size and time (reading them from the GGUF takes seconds; from this folder, a fraction of one).
    The tokenizer counts tokens and renders prompts here; the converter reads the config."""
    # Keyed as the torch path keys its de-quantized copy of a GGUF (here without the weights).
    folder = _gguf_cache_dir(cache, ModelSource(str(path.parent), path.name, path.name))
    if (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file():
        return folder
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"Could not read the model file {path.name}: {first}") from None
    if not getattr(config, "architectures", None):  # a GGUF's config names none; the LoRA converter needs it
        architecture = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
        config.architectures = [architecture] if architecture else None
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.", dir=cache))
    try:
        config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "config.json").is_file():  # not another process winning the race: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def adapter_key(folder: Path) -> str:
    """The adapter's identity for the conversion cache: its weights, its config and the converter's version."""
    digest = hashlib.sha256(LLAMA_CPP_PYTHON.encode())
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        with open(folder / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def convert_adapter(build: LlamaBuild, folder: Path, base: Path, cache: Path) -> Path:
    """The adapter as a GGUF LoRA, converted once by llama.cpp's own converter and cached by its bytes.
    ``base`` is a folder with the base model's config.json (``base_files``)."""
    target = cache / f"lora-{folder.name}-{adapter_key(folder)}.gguf"
    if not target.is_file():
        _convert(build, folder, base, target)
    drop_stale(target)  # its earlier versions
    return target


def _convert(build: LlamaBuild, folder: Path, base: Path, target: Path) -> None:
    cache = target.parent
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recap-lora-", dir=cache) as tmp:
        out = Path(tmp) / "adapter.gguf"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(build.source / "gguf-py"), str(build.source)])}
        try:
            done = subprocess.run(
                [sys.executable, str(build.source / CONVERTER), str(folder), "--base", str(base),
                 "--outtype", "f16", "--outfile", str(out)],
                env=env, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelLoadError(f"MODEL_ADAPTER={str(folder)!r} could not be converted for llama.cpp ({exc}).") from None
        if done.returncode != 0 or not out.is_file():
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            last = lines[-1][:300] if lines else f"exit code {done.returncode}"
            raise ModelLoadError(f"MODEL_ADAPTER={str(folder)!r} could not be converted for llama.cpp: {last}. "
                                 f"Check it with ENGINE=torch, or rebuild with `{BUILD_COMMAND}`.")
        os.replace(out, target)
    log.info("adapter %s converted to a GGUF LoRA in %.1fs", folder.name, time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """One ``llama-server`` child process on 127.0.0.1. Its output goes to a log file, never to ours:
    the server's own log lines carry no message text at its default verbosity, and stay out of the bot's log."""

    def __init__(self, binary: Path, model: Path, *, threads: int, slots: int, context: int, log_path: Path,
                 lora: Path | None = None) -> None:
        self.binary, self.model, self.lora = binary, model, lora
        self.threads, self.slots, self.context = threads, slots, context
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # Popen.poll answers "still running" while another thread is inside it: rows on several threads
        # ask at once when the server dies, and each must see the death.
        self._poll_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        threads = str(self.threads or os.cpu_count() or 1)
        cmd = [str(self.binary), "-m", str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
               "-t", threads, "-tb", threads, "--parallel", str(self.slots), "--no-kv-unified",
               "-c", str(self.context * self.slots),  # split evenly: every slot holds `context` tokens
               "--cache-ram", "0",  # no prompt cache beyond the slots: no copies of conversations kept around
               "--no-webui", "--log-colors", "off"]
        if self.lora is not None:
            cmd += ["--lora", str(self.lora)]
        return cmd

    def start(self) -> None:
        """Start the server and wait until it answers /health; ``ModelLoadError`` (one line) if it cannot."""
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():  # the last run's log (a crashed server's) is kept beside this one
            os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        with open(self.log_path, "wb") as log_file:
            try:
                self.proc = subprocess.Popen(self.command(), stdout=log_file, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                raise ModelLoadError(f"{self.binary} could not start ({exc.strerror or exc}): "
                                     f"run `{BUILD_COMMAND}` again.") from None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ModelLoadError(f"llama-server exited during start-up (code {code}: {self.last_log_line()}); "
                                     f"its log is {self.log_path}. Rebuild with `{BUILD_COMMAND}` if it is broken.")
            if self.healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise ModelLoadError(f"llama-server did not become ready within {START_TIMEOUT_S:g}s; see {self.log_path}.")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def alive(self) -> bool:
        return self.exit_code() is None and self.proc is not None

    def exit_code(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        with self._poll_lock:
            return proc.poll()

    def last_log_line(self) -> str:
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return lines[-1][:200] if lines else "no output"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with self._poll_lock:
            if proc.poll() is not None:
                return
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


class LlamaCppBackend(RemoteBackend):
    """``RemoteBackend`` on the ``llama-server`` it owns: the server's lifetime is this backend's."""

    dtype_name = "gguf"

    def __init__(self, config: RemoteConfig, server: LlamaServer) -> None:
        super().__init__(config)
        self.server = server
        self.device = f"cpu (llama.cpp, {server.threads or os.cpu_count()} threads)"

    def payload(self, prompt: Prompt, settings: GenerationSettings) -> dict[str, Any]:
        body = super().payload(prompt, settings)
        # As transformers applies them: the repetition penalty over the whole context (llama.cpp's default
        # looks back 64 tokens), and no min-p cut unless asked (llama.cpp's default is 0.05).
        body.update(repeat_last_n=self.context_window, min_p=0.0)
        return body

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        settings: GenerationSettings,
        *,
        row_max_new_tokens: Sequence[int] | None = None,
        stop_rows: Callable[[], Sequence[bool]] | None = None,
    ) -> list[GenerationResult | GenerationError]:
        self._check_server()
        results = super().generate_batch(prompts, settings, row_max_new_tokens=row_max_new_tokens, stop_rows=stop_rows)
        self._check_server()  # rows that failed because it died are the crash's, not the server's answers
        return results

    def _check_server(self) -> None:
        if not self.server.alive():
            raise EngineCrashed(f"llama-server exited (code {self.server.exit_code()}); see {self.server.log_path}")

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        facts.update(engine="llama.cpp", adapter=self.adapter, server=f"llama-server {self.server.url} (this process's)",
                     slots=self.server.slots, slot_context=self.server.context)
        return facts

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.server.stop()


def start_llama_cpp(config: LlamaCppConfig) -> LlamaCppBackend:
    """Check the build, model and adapter, start the server, and connect to it. ``ModelLoadError`` says what to do."""
    build = find_build(config.home)
    model_path, display = gguf_model(config.model, config.model_file)
    cache = config.cache_dir or config.home / "cache"
    adapter_dir = resolve_adapter(config.model, config.adapter)
    meta: dict[str, Any] = {}
    lora: Path | None = None
    if adapter_dir is not None:
        meta = read_adapter_meta(adapter_dir)  # a wrong adapter stops start-up before anything slow
    base = base_files(model_path, cache)
    if adapter_dir is not None:
        from transformers import AutoConfig

        check_base(adapter_dir, meta, AutoConfig.from_pretrained(str(base)))
        lora = convert_adapter(build, adapter_dir, base, cache)
    served, beside = (served_model(model_path, base.name, lora, cache), None) if config.merged else (model_path, lora)
    server = LlamaServer(build.server, served, threads=config.threads, slots=config.slots, context=config.context,
                         log_path=cache / LOG_NAME, lora=beside)
    started = time.perf_counter()
    server.start()
    remote = RemoteConfig(server.url, tokenizer=str(base), context=config.context, timeout_s=config.timeout_s,
                          retries=1, backoff_s=0.2, parallel=config.slots)
    backend = LlamaCppBackend(remote, server)
    try:
        backend.start()
    except BaseException:
        backend.close()
        raise
    adapter = meta.get("name", adapter_dir.name) if adapter_dir is not None else None
    backend.base_name = display
    backend.adapter = adapter
    backend.name = f"{display} + adapter {adapter}" if adapter else display
    if config.merged:  # the weights it runs are a Q8_0 copy of the base, with the adapter (if any) merged in
        backend.name += ", merged as Q8_0 for llama.cpp" if adapter else ", as Q8_0 for llama.cpp"
    backend.prompt_format = adapter_prompt_format(meta)
    backend.speakers = adapter_speakers(meta)
    backend.prefix_allowed = bool(meta.get("answer_prefix", True))
    log.info("llama.cpp engine: %s on %s, %d slots of %d tokens, ready in %.1fs", backend.name, backend.device,
             config.slots, config.context, time.perf_counter() - started)
    return backend
