"""One evaluation run: the summarizer over a dialogue set through the real executor, then the scores.

``eval`` and ``finetune`` both run it (each CLI imports from here, not from the other); the scoring
itself, free of the model stack, is in ``tuning/scoring.py``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from engine.conversation import ChatMessage
from engine.generation import GenerationError, GenerationSettings, Overloaded
from engine.postprocess import drop_near_duplicates, self_references
from engine.prompts import generation_for
from engine.transcript import Transcript, build_transcript
from tuning.data import sentences
from tuning.scoring import EvalRecord, RougeScorer, absent_names, copies_a_message, lead_k, speaker_names

from .config import Config
from .exports import parse_transcript


OVERLOAD_RETRIES = 20


NAMES_SEED = 0  # --names: the same names on every run, so scores compare


@dataclass
class EvalRun:
    predictions: list[str]
    failed: int  # dialogues the model could not summarize (scored as empty)
    fallbacks: int  # dialogues answered with the key messages (scored as empty: not the model's summary)
    seconds: float  # summarizing only, the model load excluded
    model: str
    speakers: str = "names"  # how the model saw people (engine.speakers): as its adapter learned


def concurrency_for(settings: Config) -> int:
    """How many dialogues are in flight: enough to fill two batches, never more than the queue admits."""
    return max(1, min(settings.max_queue_per_user, settings.max_queue_per_guild, settings.max_queue, 2 * settings.max_batch_size))


async def summarize_all(
    dialogues: list[list[ChatMessage]], settings: Config, length: str, style: str, generation: GenerationSettings,
    progress: Callable[[int, int], None] | None = None,
) -> EvalRun:
    """Summarize every dialogue concurrently through one executor; failures become empty predictions."""
    from .services import build_executor  # the model stack loads only when asked
    from engine.summarizer import Summarizer, SummaryOptions

    options = SummaryOptions(length=length, style=style, generation=generation)
    async with build_executor(settings) as executor:
        summarizer = Summarizer(executor, settings.input_token_budget)
        slots = asyncio.Semaphore(concurrency_for(settings))
        failures: list[str] = []
        fallbacks = 0
        done = 0

        async def one(messages: list[ChatMessage]) -> str:
            nonlocal done, fallbacks
            async with slots:
                text = ""
                for _ in range(OVERLOAD_RETRIES):
                    try:
                        summary = await summarizer.summarize(messages, options, guild="eval", user="eval")
                        if summary.fallback is None:
                            text = summary.text
                        else:  # the labelled key messages: never scored as the model's summary
                            fallbacks += 1
                    except Overloaded as exc:  # a long dialogue split in parts can fill this member's queue share
                        await asyncio.sleep(exc.retry_after)
                        continue
                    except GenerationError as exc:
                        failures.append(str(exc))
                    break
                else:
                    failures.append("the executor stayed overloaded")
            done += 1
            if progress is not None:
                progress(done, len(dialogues))
            return text

        started = time.perf_counter()
        predictions = list(await asyncio.gather(*(one(d) for d in dialogues)))
        seconds = time.perf_counter() - started
        model = executor.backend.name
        speakers = executor.backend.speakers
    return EvalRun(predictions, len(failures), fallbacks, seconds, model, speakers)


def score(records: list[EvalRecord], predictions: list[str]) -> dict[str, Any]:
    """ROUGE for the pipeline and the lead baselines, plus the absent-name count."""
    scorer = RougeScorer()
    references = [r.references for r in records]
    absent = sum(
        1 for r, p in zip(records, predictions) if absent_names(p, r.dialogue, speaker_names(r.dialogue))
    )
    return {
        "pipeline": scorer.corpus(predictions, references),
        "lead2": scorer.corpus([lead_k(r.dialogue, 2) for r in records], references),
        "lead3": scorer.corpus([lead_k(r.dialogue, 3) for r in records], references),
        "n": len(records),
        "absent_names": absent,
        "copies": sum(1 for r, p in zip(records, predictions) if copies_a_message(p, r.dialogue)),
        "self_references": sum(1 for r, p in zip(records, predictions) if names_someone_acting_on_themselves(p, r.dialogue)),
        "repeated": sum(1 for r, p in zip(records, predictions) if repeats_a_sentence(p, r.dialogue)),
    }


def _transcript(dialogue: str) -> Transcript:
    return build_transcript(parse_transcript(dialogue, "dialogue").messages)


def names_someone_acting_on_themselves(summary: str, dialogue: str) -> bool:
    """A sentence makes a participant act on themselves ("Theo sends the patch to Theo")."""
    transcript = _transcript(dialogue)
    return any(self_references(s, transcript.participants, transcript) for s in sentences(summary))


def repeats_a_sentence(summary: str, dialogue: str) -> bool:
    """A sentence says an earlier one again, with a changed detail at most."""
    return " ".join(drop_near_duplicates(summary, _transcript(dialogue).participants).split()) != " ".join(summary.split())


def format_table(results: dict[str, Any]) -> str:
    rows = [f"{'':<10}{'ROUGE-1':>9}{'ROUGE-2':>9}{'ROUGE-L':>9}"]
    for label, key in (("pipeline", "pipeline"), ("lead-2", "lead2"), ("lead-3", "lead3")):
        s = results[key]
        rows.append(f"{label:<10}{s['rouge1']:>9.2f}{s['rouge2']:>9.2f}{s['rougeL']:>9.2f}")
    rows.append("")
    rows.append(f"dialogues: {results['n']}   dialogues/s: {results['dialogues_per_s']:.2f}   model: {results['model']}")
    rows.append(f"summaries naming someone absent from the conversation: {results['absent_names']} of {results['n']}")
    rows.append(f"summaries that copy one message: {results['copies']} of {results['n']}")
    rows.append(f"summaries with a person acting on themselves: {results['self_references']}   "
                f"with a repeated sentence: {results['repeated']}")
    rows.append(f"failed (scored as empty): {results['failed']}   "
                f"answered with the key messages (scored as empty): {results['fallbacks']}")
    rows.append(f"names: {'seeded names for the #PersonN# tags (--names)' if results['names'] else 'as in the data'}   "
                f"the model saw people as: {results.get('speakers', 'names')}")
    return "\n".join(rows)


class EvalProgress:
    """``summarized 12/200 [###.....] 0.8/s ETA 0:03:40`` on stderr: one updating line on a terminal,
    a line per tenth otherwise."""

    def __init__(self, label: str = "", stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if not self.tty and done % max(1, total // 10) and done != total:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = done / elapsed
        eta = int((total - done) / rate) if rate else 0
        filled = 24 * done // max(total, 1)
        line = (f"{self.label}summarized {done}/{total} [{'#' * filled}{'.' * (24 - filled)}] {rate:.2f}/s "
                f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
        self.stream.write(("\r" + line + ("\n" if done == total else "")) if self.tty else line + "\n")
        self.stream.flush()


def evaluate(records: list[EvalRecord], settings: Config, length: str, style: str,
             generation: GenerationSettings | None = None, label: str = "", names: bool = False) -> dict[str, Any]:
    """Summarize and score ``records``; raises ``ExportError``, ``ModelLoadError``, ``GenerationError``."""
    dialogues = [parse_transcript(r.dialogue, f"record on line {r.line}").messages for r in records]
    generation = generation or generation_for(length)
    run = asyncio.run(summarize_all(dialogues, settings, length, style, generation, progress=EvalProgress(label)))
    results = score(records, run.predictions)
    results["dialogues_per_s"] = round(len(records) / run.seconds, 3) if run.seconds > 0 else 0.0
    results["failed"] = run.failed
    results["fallbacks"] = run.fallbacks
    results["model"] = run.model
    results["speakers"] = run.speakers
    results["style"] = style
    results["names"] = names
    return results


def format_styles(rows: list[dict[str, Any]]) -> str:
    """One row per style, baselines once."""
    lines = [f"{'':<14}{'ROUGE-1':>9}{'ROUGE-2':>9}{'ROUGE-L':>9}{'absent':>8}{'copies':>8}{'self':>6}{'repeat':>8}"
             f"{'failed':>8}{'fallback':>10}"]
    for row in rows:
        s = row["pipeline"]
        lines.append(f"{row['style']:<14}{s['rouge1']:>9.2f}{s['rouge2']:>9.2f}{s['rougeL']:>9.2f}"
                     f"{row['absent_names']:>8}{row['copies']:>8}{row['self_references']:>6}{row['repeated']:>8}"
                     f"{row['failed']:>8}{row['fallbacks']:>10}")
    for label, key in (("lead-2", "lead2"), ("lead-3", "lead3")):
        s = rows[0][key]
        lines.append(f"{label:<14}{s['rouge1']:>9.2f}{s['rouge2']:>9.2f}{s['rougeL']:>9.2f}")
    lines.append("")
    lines.append(f"dialogues: {rows[0]['n']}   model: {rows[0]['model']}   names: {'seeded' if rows[0]['names'] else 'as in the data'}")
    return "\n".join(lines)
