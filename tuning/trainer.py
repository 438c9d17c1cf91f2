"""Supervised LoRA fine-tuning of the serving model on dialogue/summary pairs.

The model is loaded by the bot's own loader (``load_backend``), the examples
are rendered by its own prompt code (``tuning.data``), and the loss covers
only the answer tokens, so what is trained is exactly what is served.
Training is resumable: a checkpoint holds the adapter, optimizer, scheduler,
RNG states and the step, and the step alone fixes the data position (each
epoch's batch order is derived from the seed).
"""

from __future__ import annotations

import logging
import math
import random
import re
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from engine.generation import Prompt
from engine.adapters import base_fingerprint, save_adapter
from engine.models import ModelBackend
from engine.prompts import RULES
from engine.speakers import NAMES

from .data import TextExample

log = logging.getLogger(__name__)

CHECKPOINT_STATE = "trainer_state.pt"
IGNORE = -100  # label of tokens the loss does not cover (the prompt, the padding)
LENGTH_WINDOW = 32  # batches per window sorted by length: padding stays low, order stays random


class FinetuneError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


class Interrupted(Exception):
    """Ctrl-C during training: a checkpoint was saved at ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 16
    lr: float = 3e-4
    batch_size: int = 8
    seed: int = 0
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    max_tokens: int = 768  # prompt + answer; longer examples are skipped and counted
    warmup: float = 0.05  # share of the steps with a rising learning rate
    checkpoint_every: int = 50
    precision: str = "auto"  # auto: bf16 autocast on CUDA where supported, else fp32
    # The prompt wording the examples were built in (engine.prompts); the adapter records it for serving,
    # and a checkpoint only resumes with the same one.
    prompt_format: str = RULES
    speakers: str = NAMES  # names or speaker tags (engine.speakers), recorded likewise
    # LoRA on the top N transformer blocks only (None: all). Autograd stops below the lowest adapted
    # block, so the backward pass through the rest is skipped: a cheaper step on a CPU.
    lora_layers: int | None = None


@dataclass
class TokenExample:
    ids: list[int]
    labels: list[int]  # IGNORE for prompt tokens (causal); the answer alone (seq2seq)
    line: int
    kind: str


def answer_end_id(backend: ModelBackend) -> int:
    """The token generation stops at, so the model learns to stop where serving expects it."""
    eos = backend.model.generation_config.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    return int(eos if eos is not None else backend.tokenizer.eos_token_id)


def tokenize(backend: ModelBackend, examples: Sequence[TextExample], max_tokens: int) -> tuple[list[TokenExample], int]:
    """Token ids as serving builds them (``render`` + the same special-token rule); returns (kept, skipped)."""
    tok = backend.tokenizer
    end = answer_end_id(backend)
    kept: list[TokenExample] = []
    skipped = 0
    for ex in examples:
        rendered = backend.render(Prompt(ex.prompt_system, ex.prompt_user))
        prompt_ids = tok(rendered, add_special_tokens=not backend.has_chat_template)["input_ids"]
        answer_ids = tok(ex.answer, add_special_tokens=False)["input_ids"] + [end]
        if backend.is_encoder_decoder:
            ids, labels = prompt_ids, answer_ids
            size = max(len(ids), len(labels))
        else:
            ids, labels = prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids
            size = len(ids)
        if size > max_tokens or size > backend.context_window:
            skipped += 1
            continue
        kept.append(TokenExample(ids, labels, ex.line, ex.kind))
    return kept, skipped


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches: shuffled, grouped by length within windows, batch order shuffled again."""
    rng = random.Random(f"{seed}:epoch:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * LENGTH_WINDOW
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(batch: Sequence[TokenExample], pad_id: int, encoder_decoder: bool, device: str) -> dict[str, Any]:
    import torch

    width = max(len(ex.ids) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ex in enumerate(batch):
        ids[row, : len(ex.ids)] = torch.tensor(ex.ids)
        mask[row, : len(ex.ids)] = 1
    label_width = max(len(ex.labels) for ex in batch)
    labels = torch.full((len(batch), label_width), IGNORE, dtype=torch.long)
    for row, ex in enumerate(batch):
        labels[row, : len(ex.labels)] = torch.tensor(ex.labels)
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return {k: v.to(device) for k, v in out.items()}


class Progress:
    """step, loss, tokens/s and ETA on stderr: one updating line on a terminal, a line per interval otherwise."""

    def __init__(self, total: int, start: int, stream: TextIO | None = None, every: int = 0) -> None:
        self.total, self.start = total, start
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every or max(1, total // 100)
        self.started = time.perf_counter()
        self.tokens = 0
        self.loss: float | None = None

    def update(self, step: int, loss: float, tokens: int) -> None:
        self.tokens += tokens
        self.loss = loss if self.loss is None else 0.9 * self.loss + 0.1 * loss
        if not self.tty and step % self.every and step != self.total:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        done = step - self.start
        eta = elapsed / done * (self.total - step) if done else 0.0
        width = 24
        filled = int(width * step / max(self.total, 1))
        line = (f"step {step}/{self.total} [{'#' * filled}{'.' * (width - filled)}] loss {self.loss:.3f} "
                f"| {self.tokens / elapsed:,.0f} tok/s | ETA {_clock(eta)}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class TrainResult:
    steps: int
    examples: int
    epochs: float
    seconds: float  # this process's share
    final_loss: float | None
    losses: list[tuple[int, float]]
    # Over the whole run, resumes included: what the model card reports.
    examples_seen: int = 0
    train_seconds: float = 0.0

    @property
    def examples_per_s(self) -> float:
        return self.examples_seen / self.train_seconds if self.train_seconds > 0 else 0.0


def schedule_factor(step: int, total: int, warmup: float) -> float:
    """The learning rate's share of its peak at ``step``: a linear warm-up, then straight down to 0 at ``total``."""
    warm = max(1, round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def _run_length_aside(signature: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint signature without the run's length (``--max-steps``/``--epochs``), which a resume may change."""
    config = {k: v for k, v in signature["config"].items() if k not in ("max_steps", "epochs")}
    return {**signature, "config": config, "total": None}


class Trainer:
    """LoRA on every linear layer of ``backend.model``; one instance trains one adapter into ``out``."""

    def __init__(self, backend: ModelBackend, examples: list[TokenExample], config: TrainConfig,
                 out: Path, checkpoint_dir: Path | None = None, run_info: dict[str, Any] | None = None) -> None:
        if not examples:
            raise FinetuneError("no training examples are left (all were skipped as too long?)")
        self.backend = backend
        self.examples = examples
        self.config = config
        self.out = out
        self.checkpoint_dir = checkpoint_dir or out / "checkpoint"
        self.run_info = run_info or {}
        self.base = base_fingerprint(backend.model.config)  # before peft wraps the model
        self.lengths = [len(ex.ids) + (len(ex.labels) if backend.is_encoder_decoder else 0) for ex in examples]
        self.per_epoch = math.ceil(len(examples) / config.batch_size)
        self.total = config.max_steps or max(1, math.ceil(config.epochs * self.per_epoch))
        self._epoch_cache: tuple[int, list[list[int]]] | None = None
        self._stop = False
        self.replanned: tuple[int, int, int] | None = None  # (planned steps, new end, at step) after a resume
        self._decay_from: tuple[int, float] | None = None  # (step, rate factor there) once the length changed
        self.model: Any = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.step = 0
        self.losses: list[tuple[int, float]] = []
        self.examples_seen = 0  # over the whole run, resumes included, as is train_seconds
        self.train_seconds = 0.0

    # ---- set-up ----

    def _signature(self) -> dict[str, Any]:
        """What must be the same for a checkpoint to continue exactly."""
        config = {k: v for k, v in asdict(self.config).items() if k != "checkpoint_every"}
        # Defaults dropped, as checkpoints from before each choice say it, so they still resume.
        if config["prompt_format"] == RULES:
            del config["prompt_format"]
        if config["speakers"] == NAMES:
            del config["speakers"]
        if config["lora_layers"] is None:
            del config["lora_layers"]
        return {"config": config, "examples": len(self.examples), "total": self.total, "base": self.base}

    def _build(self) -> None:
        import torch
        from peft import LoraConfig, TaskType, get_peft_model

        torch.manual_seed(self.config.seed)
        task = TaskType.SEQ_2_SEQ_LM if self.backend.is_encoder_decoder else TaskType.CAUSAL_LM
        base = self.backend.model.float() if self.backend.model.dtype != torch.float32 else self.backend.model
        layers = self._top_layers()
        # peft takes a layer subset only with named modules: every linear one of the blocks, as "all-linear".
        targets: Any = "all-linear" if layers is None else sorted({
            name.rsplit(".", 1)[-1] for name, module in base.named_modules()
            if isinstance(module, torch.nn.Linear) and re.search(r"\.\d+\.", name)})  # inside a numbered block
        lora = LoraConfig(r=self.config.rank, lora_alpha=2 * self.config.rank, lora_dropout=0.05,
                          target_modules=targets, task_type=task, layers_to_transform=layers)
        self.model = get_peft_model(base, lora)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=0.0)
        total = self.total

        def factor(step: int) -> float:
            if self._decay_from is not None and step >= self._decay_from[0]:
                # A resumed run whose length changed: straight down from the rate it had to 0 at the new end.
                start, rate = self._decay_from
                return max(0.0, rate * (total - step) / max(1, total - start))
            return schedule_factor(step, total, self.config.warmup)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def _top_layers(self) -> list[int] | None:
        wanted = self.config.lora_layers
        if wanted is None:
            return None
        count = int(getattr(self.backend.model.config, "num_hidden_layers", 0) or 0)
        if self.backend.is_encoder_decoder or count <= 0:
            raise FinetuneError("--lora-layers works with decoder-only models; leave it out for this model")
        if wanted >= count:
            return None
        return list(range(count - wanted, count))

    def _autocast(self) -> Any:
        import contextlib

        import torch

        device = self.backend.device
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        if device.startswith("cuda") and (self.config.precision == "bf16" or torch.cuda.is_bf16_supported()):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.config.precision == "bf16":
            return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---- data position ----

    def batch_at(self, step: int) -> list[TokenExample]:
        epoch, index = divmod(step, self.per_epoch)
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, epoch_batches(self.lengths, self.config.batch_size, self.config.seed, epoch))
        return [self.examples[i] for i in self._epoch_cache[1][index]]

    # ---- checkpoints ----

    def save_checkpoint(self) -> None:
        import torch

        tmp = self.checkpoint_dir.with_name(self.checkpoint_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save_pretrained(str(tmp), save_embedding_layers=False)
        state = {
            "step": self.step,
            "signature": self._signature(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "rng_python": random.getstate(),
            "losses": self.losses,
            "train_seconds": self.train_seconds,
            "examples_seen": self.examples_seen,
            "replanned": list(self.replanned) if self.replanned else None,
            "decay_from": list(self._decay_from) if self._decay_from else None,
        }
        torch.save(state, tmp / CHECKPOINT_STATE)
        old = self.checkpoint_dir.with_name(self.checkpoint_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.checkpoint_dir.exists():
            self.checkpoint_dir.rename(old)
        tmp.rename(self.checkpoint_dir)
        shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self) -> None:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state_file = self.checkpoint_dir / CHECKPOINT_STATE
        if not state_file.is_file():
            raise FinetuneError(f"--resume: no checkpoint in {self.checkpoint_dir}")
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        saved, wanted = state["signature"], self._signature()
        at = int(state["step"])
        self.replanned = tuple(state["replanned"]) if state.get("replanned") else None  # type: ignore[assignment]
        self._decay_from = tuple(state["decay_from"]) if state.get("decay_from") else None  # type: ignore[assignment]
        if saved != wanted:
            if _run_length_aside(saved) != _run_length_aside(wanted):
                raise FinetuneError(
                    f"--resume: the checkpoint in {self.checkpoint_dir} was made with other settings or data "
                    "(run with the same command line, or start a new --out)"
                )
            if at >= self.total:
                raise FinetuneError(f"--resume: the checkpoint is at step {at}, at or past the new end ({self.total} "
                                    f"steps); give a --max-steps above {at}")
            old_total = int(saved["total"])
            if old_total != self.total:
                # Only the run's length changed (slower than planned, shortened; or lengthened): the rate goes
                # straight down from where it is now to 0 at the new end.
                rate = (self._decay_from[1] * (old_total - at) / max(1, old_total - self._decay_from[0])
                        if self._decay_from is not None and at >= self._decay_from[0]
                        else schedule_factor(at, old_total, self.config.warmup))
                self._decay_from = (at, rate)
                self.replanned = (self.replanned[0] if self.replanned else old_total, self.total, at)
                log.warning("--resume: the run was planned for %d steps and now ends at step %d; from step %d "
                            "the learning rate decays to the new end", *self.replanned)
        set_peft_model_state_dict(self.model, load_file(str(self.checkpoint_dir / "adapter_model.safetensors"),
                                                        device=self.backend.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"])
        if state["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        random.setstate(state["rng_python"])
        self.step = int(state["step"])
        self.losses = [tuple(x) for x in state["losses"]]
        # Both are absent from checkpoints made before they were kept.
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.examples_seen = int(state.get("examples_seen", self.step * self.config.batch_size))

    # ---- training ----

    def _loss(self, inputs: dict[str, Any]) -> Any:
        """Mean cross-entropy over the answer tokens.

        A causal model is asked for logits only from the first answer-predicting position on: the
        vocabulary projection of every prompt position would cost memory (about 1.5 GB at batch 8 of
        640 tokens with a 49k vocabulary) and time for tokens the loss ignores."""
        import torch

        if self.backend.is_encoder_decoder:
            return self.model(**inputs).loss
        labels = inputs["labels"]
        answer = labels != IGNORE
        first = int(answer.float().argmax(dim=1).min())  # earliest answer token in the batch
        keep = labels.shape[1] - first + 1  # logits at position t predict token t + 1
        logits = self.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            logits_to_keep=keep).logits
        targets = labels[:, labels.shape[1] - keep + 1:]
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)

    def _on_sigint(self, *_: Any) -> None:
        self._stop = True  # finish the step under way, then checkpoint and stop

    def train(self, *, resume: bool = False, progress_stream: TextIO | None = None,
              on_step: Callable[[int], None] | None = None, stop_at: int | None = None) -> TrainResult:
        """Train to the end of the run, or to step ``stop_at`` of it (a snapshot; a resume goes on from there)."""
        import threading

        import torch

        self._build()
        if resume:
            self.load_checkpoint()
        pad = self.backend.tokenizer.pad_token_id
        progress = Progress(self.total, self.step, progress_stream)
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if in_main else None
        started = step_started = time.perf_counter()
        end = min(self.total, stop_at) if stop_at else self.total
        try:
            while self.step < end:
                if self._stop:
                    self.save_checkpoint()
                    raise Interrupted(self.step)
                batch = self.batch_at(self.step)
                inputs = collate(batch, pad, self.backend.is_encoder_decoder, self.backend.device)
                with self._autocast():
                    loss = self._loss(inputs)
                if not torch.isfinite(loss):
                    raise FinetuneError(f"the loss became {loss.item()} at step {self.step + 1}; try a lower --lr")
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.examples_seen += len(batch)
                now = time.perf_counter()
                self.train_seconds += now - step_started
                step_started = now
                value = float(loss.item())
                self.losses.append((self.step, round(value, 4)))
                progress.update(self.step, value, int(inputs["attention_mask"].sum()) + int((inputs["labels"] != IGNORE).sum()))
                if on_step is not None:
                    on_step(self.step)
                if self.step % self.config.checkpoint_every == 0 and self.step < self.total:
                    self.save_checkpoint()
        finally:
            progress.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self.save_checkpoint()
        tail = [loss for _, loss in self.losses[-20:]]
        return TrainResult(self.step, len(self.examples), self.step / self.per_epoch,
                           time.perf_counter() - started, sum(tail) / len(tail) if tail else None, self.losses,
                           examples_seen=self.examples_seen, train_seconds=self.train_seconds)

    def save_adapter(self, name: str, base_name: str) -> Path:
        """The final adapter, in the format ``engine.adapters`` writes and the loader checks."""
        return save_adapter(self.model, self.out, name=name, base_name=base_name, base=self.base,
                            prompt_format=self.config.prompt_format, speakers=self.config.speakers,
                            training={"rank": self.config.rank, "lora_layers": self.config.lora_layers,
                                      "steps": self.step, **self.run_info})
