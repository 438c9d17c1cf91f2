"""From chat messages to a checked ``Summary``, through the executor only.

Short conversations take one request. Longer ones are cut to the input budget
(oldest messages first), split into chunks at message boundaries, summarized
as concurrent notes under one job id (so the executor batches them), and the
notes are combined, recursively while they do not fit one prompt. Every
generation is cleaned and checked; an unusable one is retried once with
adjusted settings. When the model's output stays unusable, the answer is the
faithful key-messages extract, labelled (``Summary.fallback``), never an error.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Awaitable, Callable, Protocol

from . import chunking, postprocess, speakers
from .conversation import ChatMessage
from .generation import (
    GenerationRequest,
    GenerationResult,
    GenerationSettings,
    InvalidRequest,
    Prompt,
    QueueStatus,
    SummaryFailed,
)
from .prompts import (
    KEY_MESSAGE_COUNT,
    MODEL_FREE_STYLES,
    check_options,
    combine_prompt,
    generation_for,
    notes_prompt,
    summary_prompt,
    target_words,
)
from .transcript import Line, Transcript, build_transcript, key_message_indices, third_person

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], Any]  # (stage, done, total); may be a coroutine function

PROMPT_MARGIN = 8  # tokens kept free beyond the measured prompt overhead
LISTING_STYLES = ("bullets", "topics", "action_items")


class Executor(Protocol):
    """What the summarizer needs from ``bot.executor.Executor``."""

    backend: Any

    async def submit(self, request: GenerationRequest) -> GenerationResult: ...

    async def count_tokens(self, text: str) -> int: ...

    async def prompt_tokens(self, prompt: Prompt) -> int: ...


@dataclass(frozen=True)
class SummaryOptions:
    length: str = "medium"
    style: str = "paragraph"
    generation: GenerationSettings | None = None  # None: the length preset's defaults


@dataclass(frozen=True)
class Topic:
    title: str
    message_id: int | None  # the first message about it, when known


@dataclass
class Summary:
    text: str
    citations: list[int]  # message ids the summary cites, first-cited first
    topics: list[Topic]
    participants: list[str]
    start: datetime | None
    end: datetime | None
    message_count: int  # messages read
    truncated: bool  # older messages were left out to stay within the input budget
    source_ids: list[int]  # ids of the messages read
    model: str
    settings: GenerationSettings  # what the final stage ran with
    chunks: int = 1  # 1: one request; more: map-reduce over this many chunks
    retried: bool = False
    notes: list[str] = field(default_factory=list)  # map-stage notes, for debugging and tests
    fallback: str | None = None  # why the model's summary was unusable; the text is then the key messages


FALLBACK_NOTE = "The model's summary was unusable; these are the key messages."
FALLBACK_MODEL = "key messages (extractive: the model's summary was unusable)"


def _user_error(cls: type[InvalidRequest] | type[SummaryFailed], message: str) -> Exception:
    """An error whose ``user_message`` is this specific, friendly message."""
    err = cls(message)
    err.user_message = message
    return err


def retry_settings(settings: GenerationSettings) -> GenerationSettings:
    """Settings for the one retry: a stronger repetition penalty, and sampling to leave a stuck path."""
    penalty = min(2.0, max(1.3, round(settings.repetition_penalty + 0.2, 2)))
    if settings.sampling:
        return settings.with_(repetition_penalty=penalty)
    return settings.with_(repetition_penalty=penalty, sampling=True, temperature=0.6, top_p=0.9,
                          seed=settings.seed if settings.seed is not None else 0)


def join_prefix(prefix: str, generated: str) -> str:
    """The written start of the answer plus what the model continued with."""
    if not prefix:
        return generated
    if not generated or generated[0] in ",.;:!?'\n" or prefix.endswith((" ", "\n")):
        return prefix + generated
    return f"{prefix} {generated}"


class Summarizer:
    def __init__(
        self,
        executor: Executor,
        input_token_budget: int = 24000,
        *,
        max_chunk_tokens: int = 3072,
        max_parallel: int = 6,
    ) -> None:
        if input_token_budget < 1 or max_chunk_tokens < 64 or max_parallel < 1:
            raise ValueError("input_token_budget, max_chunk_tokens (>= 64) and max_parallel must be positive")
        self.executor = executor
        self.input_token_budget = input_token_budget
        self.max_chunk_tokens = max_chunk_tokens  # small models summarize short inputs better
        self.max_parallel = max_parallel  # stays under the executor's per-member queue share

    async def summarize(
        self,
        messages: list[ChatMessage],
        options: SummaryOptions | None = None,
        *,
        guild: str = "local",
        user: str = "local",
        priority: int = 0,
        progress: Progress | None = None,
        timeout: float | None = None,
        job: str | None = None,
    ) -> Summary:
        """Summarize ``messages`` (oldest first). Raises ``InvalidRequest`` (with a friendly ``user_message``)
        or the executor's ``GenerationError``s; an unusable model output gives the labelled key messages
        (``Summary.fallback`` says why), not an error.

        ``job``: a job id the caller reserved with the executor (``Executor.reserve``), so every
        stage counts as that one held slot; None: a fresh id. Progress stage "queued" reports
        (position in line, estimated seconds to wait or 0 when unknown)."""
        run = _Run(self, options or SummaryOptions(), guild, user, priority, progress, timeout)
        if job is not None:
            run.job = job
        return await run.execute(messages)


class _Run:
    """One summarize call: its options, job id and progress reporting."""

    def __init__(self, owner: Summarizer, options: SummaryOptions, guild: str, user: str,
                 priority: int, progress: Progress | None, timeout: float | None) -> None:
        check_options(options.length, options.style)
        self.owner = owner
        self.executor = owner.executor
        self.options = options
        self.settings = options.generation or generation_for(options.length)
        self.guild, self.user, self.priority, self.timeout = str(guild), str(user), priority, timeout
        self.progress = progress
        self.job = uuid.uuid4().hex
        self.retried = False
        self._slots = asyncio.Semaphore(owner.max_parallel)

    async def _report(self, stage: str, done: int, total: int) -> None:
        if self.progress is None:
            return
        try:
            outcome = self.progress(stage, done, total)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:  # noqa: BLE001 - a broken progress display must not fail the summary
            log.exception("progress callback failed")

    def _on_queue(self, status: QueueStatus) -> None:
        if self.progress is None:
            return
        try:
            outcome = self.progress("queued", status.position, queue_wait_seconds(status))
            if inspect.isawaitable(outcome):
                asyncio.ensure_future(outcome)
        except Exception:  # noqa: BLE001
            log.exception("progress callback failed")

    # ---- reading ----

    async def _count(self, lines: list[Line]) -> list[int]:
        return list(await asyncio.gather(*(self.executor.count_tokens(line.text) for line in lines)))

    async def _read(self, messages: list[ChatMessage]) -> tuple[Transcript, list[int], bool]:
        """The transcript within the input budget, its per-line token counts, and whether it was cut."""
        transcript = build_transcript(messages)
        if not transcript.lines:
            raise _user_error(InvalidRequest, "There are no messages to summarize (bot and system messages are left out).")
        counts = await self._count(transcript.lines)
        first = chunking.newest_within_budget(counts, self.owner.input_token_budget)
        if first == 0:
            return transcript, counts, False
        # Re-number from 1 so the kept part reads as a whole conversation.
        kept = [messages[line.position] for line in transcript.lines[first:]]
        transcript = build_transcript(kept)
        return transcript, await self._count(transcript.lines), True

    # ---- generation with checks ----

    async def _overhead(self, prompt: Prompt) -> int:
        return int(await self.executor.prompt_tokens(prompt)) + PROMPT_MARGIN

    @property
    def prompt_format(self) -> str:
        """The prompt wording for every stage: the one the loaded model was tuned on (``rules`` if untuned)."""
        return self.executor.backend.prompt_format

    @property
    def speakers(self) -> str:
        """How the model sees people (``engine.speakers``): as the adapter learned, names if untuned."""
        return self.executor.backend.speakers

    async def _generate(self, prompt: Prompt, settings: GenerationSettings, transcript: Transcript, *,
                        echo_source: str | None, listing: bool, keep_markers: bool) -> postprocess.Cleaned:
        """One checked generation, retried once with adjusted settings when unusable."""
        if prompt.prefix and not self.executor.backend.answer_prefix:
            prompt = replace(prompt, prefix="")  # encoder-decoders and tuned adapters write their own start
        attempt_settings = settings
        for attempt in range(2):
            async with self._slots:
                result = await self.executor.submit(GenerationRequest(
                    prompt, attempt_settings, guild=self.guild, user=self.user, priority=self.priority,
                    timeout=self.timeout, job=self.job, on_queue=self._on_queue,
                ))
            cleaned = postprocess.clean_output(join_prefix(prompt.prefix, result.text), transcript, echo_source=echo_source,
                                               finished=result.finished, listing=listing, keep_markers=keep_markers)
            if cleaned.problem is None and len(postprocess.words(result.text)) < 2:
                cleaned = postprocess.Cleaned("", problem="empty")  # nothing beyond the written start
            if cleaned.problem is None:
                return cleaned
            # The output can be channel text (an echo, an injection): only its kind and size at INFO.
            log.info("unusable generation (%s) on attempt %d: %d characters", cleaned.problem, attempt + 1, len(result.text))
            log.debug("unusable generation text: %r", result.text[:200])
            self.retried = True
            attempt_settings = retry_settings(settings)
        return cleaned

    # ---- stages ----

    async def execute(self, messages: list[ChatMessage]) -> Summary:
        await self._report("reading", 0, 1)
        transcript, counts, truncated = await self._read(messages)
        await self._report("reading", 1, 1)
        length, style = self.options.length, self.options.style
        if style in MODEL_FREE_STYLES:
            return self._key_messages(transcript, truncated)
        try:
            if self.speakers == speakers.TAGS:
                return await self._tagged_summary(transcript, truncated)
            return await self._model_summary(transcript, counts, truncated)
        except SummaryFailed as exc:
            # A member asking for a summary gets one: the faithful extract, labelled, not an error.
            log.info("job %s: the model's summary was unusable (%s); answering with the key messages", self.job, exc)
            summary = self._key_messages(transcript, truncated)
            summary.fallback, summary.model, summary.retried = str(exc), FALLBACK_MODEL, True
            return summary

    async def _tagged_summary(self, transcript: Transcript, truncated: bool) -> Summary:
        """The model's summary of the chat with speaker tags for names, with the names put back."""
        tagged, names = speakers.tag_transcript(transcript)
        summary = await self._model_summary(tagged, await self._count(tagged.lines), truncated)
        summary.text = speakers.untag(summary.text, names)
        summary.topics = [Topic(speakers.untag(t.title, names), t.message_id) for t in summary.topics]
        summary.notes = [speakers.untag(note, names) for note in summary.notes]
        summary.participants = list(transcript.participants)
        return summary

    async def _model_summary(self, transcript: Transcript, counts: list[int], truncated: bool) -> Summary:
        """The model's summary, or ``SummaryFailed`` when its output was unusable twice."""
        length, style = self.options.length, self.options.style
        n_lines = len(transcript.lines)
        backend = self.executor.backend
        context = int(backend.context_window)
        empty_final = summary_prompt("", transcript.participants, length, style, n_lines, self.prompt_format)
        room = context - self.settings.max_new_tokens - await self._overhead(empty_final)
        notes: list[str] = []
        if sum(counts) <= min(room, self.owner.max_chunk_tokens):
            await self._report("summarizing", 0, 1)
            text = transcript.render()
            prompt = summary_prompt(text, transcript.participants, length, style, n_lines, self.prompt_format)
            final = await self._generate(prompt, self.settings, transcript, echo_source=text,
                                         listing=style in LISTING_STYLES, keep_markers=True)
            await self._report("summarizing", 1, 1)
            chunks = 1
        else:
            notes = await self._map(transcript, counts)
            chunks = len(notes)
            final = await self._reduce(notes, transcript)
        if final.problem is not None:
            raise SummaryFailed(f"its output was {final.problem} twice")
        return self._assemble(final, transcript, truncated, chunks, notes)

    async def _map(self, transcript: Transcript, counts: list[int]) -> list[str]:
        """Notes for each chunk, as concurrent requests of one job."""
        backend = self.executor.backend
        context = int(backend.context_window)
        notes_settings = self.settings.with_(max_new_tokens=max(32, min(192, context // 6)))
        overhead = await self._overhead(notes_prompt("", transcript.participants, self.prompt_format))
        limit = min(self.owner.max_chunk_tokens, context - notes_settings.max_new_tokens - overhead)
        if limit < 32:
            raise _user_error(InvalidRequest, f"The model's context ({context} tokens) is too small to summarize in parts.")
        spans = chunking.split_spans(counts, limit)
        total = len(spans)
        done = 0
        await self._report("summarizing", 0, total)

        async def one(span: chunking.Span) -> str | None:
            nonlocal done
            lines = transcript.lines[span.start:span.stop]
            text = transcript.render(lines)
            if span.tokens > limit:  # one message over the limit: cut it to fit
                text = text[: max(40, len(text) * limit // span.tokens - 40)] + " [message trimmed]"
            cleaned = await self._generate(notes_prompt(text, transcript.participants, self.prompt_format), notes_settings, transcript,
                                           echo_source=text, listing=False, keep_markers=True)
            done += 1
            await self._report("summarizing", done, total)
            return cleaned.text if cleaned.problem is None else None

        results = await asyncio.gather(*(one(span) for span in spans))
        notes = [text for text in results if text]
        if not notes:
            raise SummaryFailed("no part of the conversation got usable notes")
        if len(notes) < len(results):
            log.warning("job %s: %d of %d chunk notes were unusable and left out", self.job, len(results) - len(notes), len(results))
        return notes

    async def _reduce(self, notes: list[str], transcript: Transcript) -> postprocess.Cleaned:
        """Combine notes into the final summary; merge groups first while they do not fit one prompt."""
        length, style = self.options.length, self.options.style
        context = int(self.executor.backend.context_window)
        n_lines = len(transcript.lines)
        merge_settings = self.settings.with_(max_new_tokens=max(32, min(192, context // 6)))

        def combine(part: list[str], final: bool) -> Prompt:
            return combine_prompt(part, transcript.participants, length, style, n_lines, final=final,
                                  prompt_format=self.prompt_format)

        round_no = 0
        while True:
            round_no += 1
            counts = list(await asyncio.gather(*(self.executor.count_tokens(f"Part 99: {n}") for n in notes)))
            final_overhead = await self._overhead(combine([], final=True))
            if sum(counts) <= context - self.settings.max_new_tokens - final_overhead:
                await self._report("combining", 0, 1)
                final = await self._generate(
                    combine(notes, final=True),
                    self.settings, transcript, echo_source=None, listing=style in LISTING_STYLES, keep_markers=True)
                await self._report("combining", 1, 1)
                return final
            merge_overhead = await self._overhead(combine([], final=False))
            limit = min(self.owner.max_chunk_tokens, context - merge_settings.max_new_tokens - merge_overhead)
            groups = chunking.group_for_combine(counts, limit)
            if len(groups) >= len(notes):
                raise _user_error(InvalidRequest, f"The model's context ({context} tokens) is too small to combine the notes of this conversation.")
            total = len(groups)
            await self._report("combining", 0, total)
            done = 0

            async def merge(group: chunking.Span) -> str | None:
                nonlocal done
                cleaned = await self._generate(
                    combine(notes[group.start:group.stop], final=False),
                    merge_settings, transcript, echo_source=None, listing=False, keep_markers=True)
                done += 1
                await self._report("combining", done, total)
                return cleaned.text if cleaned.problem is None else None

            merged = [text for text in await asyncio.gather(*(merge(g) for g in groups)) if text]
            if not merged:
                raise SummaryFailed("the notes could not be combined")
            log.debug("job %s: combine round %d, %d notes -> %d", self.job, round_no, len(notes), len(merged))
            notes = merged

    def _key_messages(self, transcript: Transcript, truncated: bool) -> Summary:
        """The faithful digest: key messages in the third person, each cited, no generation."""
        indices = key_message_indices(transcript, KEY_MESSAGE_COUNT[self.options.length])
        sentences = []
        for index in indices:
            sentence = third_person(transcript, transcript.lines[index - 1])
            sentence = postprocess.tidy_spaces(postprocess.remove_urls(postprocess.remove_mentions(sentence)))
            sentences.append(sentence if sentence[-1:] in ".!?" else sentence.rstrip("…") + ".")
        text = " ".join(sentences)
        final = postprocess.Cleaned(text, indices)
        summary = self._assemble(final, transcript, truncated, 0, [], fit=False)
        summary.model = "key messages (extractive, no model)"
        return summary

    # ---- result ----

    def _assemble(self, final: postprocess.Cleaned, transcript: Transcript, truncated: bool,
                  chunks: int, notes: list[str], fit: bool = True) -> Summary:
        topics: list[Topic] = []
        if self.options.style == "topics":
            topics = parse_topics(final.text, transcript)
        text, _ = postprocess.extract_citations(final.text, transcript)
        # The preset's size is a promise to the reader; small models overrun it.
        text = postprocess.tidy_spaces(text)
        if self.options.style == "action_items" and re.fullmatch(r"(?is)[-\s]*no action items\W*", text):
            text = "No action items."  # the written "- " start, answered with "none"
        if self.options.style == "bullets":
            text = postprocess.as_bullets(text)  # a model without the written "- " start may answer in prose
        if fit:
            text = postprocess.fit_length(text, target_words(self.options.length, len(transcript.lines)))
        citations = [mid for mid in (transcript.message_id(i) for i in final.citations) if mid is not None]
        return Summary(
            text=text,
            citations=citations,
            topics=topics,
            participants=list(transcript.participants),
            start=transcript.start,
            end=transcript.end,
            message_count=len(transcript.lines),
            truncated=truncated,
            source_ids=[line.message_id for line in transcript.lines if line.message_id is not None],
            model=self.executor.backend.name,
            settings=self.settings,
            chunks=chunks,
            retried=self.retried,
            notes=notes,
        )


_TOPIC_LINE = re.compile(r"^\s*(?:-\s*)?(.+?)\s*$")


def parse_topics(text: str, transcript: Transcript) -> list[Topic]:
    """Topic lines ``- title [n]`` -> ``Topic``; without a valid ``[n]``, the earliest message sharing the most words."""
    topics: list[Topic] = []
    line_words = [set(postprocess.words(line.text.split(":", 1)[-1])) for line in transcript.lines]
    for raw in text.splitlines():
        stripped, cited = postprocess.extract_citations(raw, transcript)
        match = _TOPIC_LINE.match(stripped)
        title = match.group(1).strip(" -:.") if match else ""
        if not title:
            continue
        index = cited[0] if cited else _best_line(title, line_words)
        topics.append(Topic(title, transcript.message_id(index) if index else None))
    return topics


def _best_line(title: str, line_words: list[set[str]]) -> int | None:
    wanted = {w for w in postprocess.words(title) if len(w) > 3}
    best, best_score = None, 0
    for i, have in enumerate(line_words, 1):
        score = len(wanted & have)
        if score > best_score:
            best, best_score = i, score
    return best


def queue_wait_seconds(status: QueueStatus) -> int:
    """The progress callback's whole seconds of expected wait, 0 when unknown. Rounded up: a short
    wait (0.3 s) is still a wait, and 0 would read as "no estimate yet"."""
    return math.ceil(status.eta_s) if status.eta_s else 0
