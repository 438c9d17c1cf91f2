"""The summarizer's mechanics on the real executor with tiny random models.

A random model writes gibberish, which the output checks rightly reject (it is
full of invented capitalized words). So these models get a restricted vocabulary
through their own ``generation_config.suppress_tokens``: the real ``generate``
then writes random lowercase words, which pass the checks, or one word over and
over, which is a real repetition loop. The wording is never asserted; the
mechanics are (chunking, batching by job, citations, truncation, retries).
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from engine.conversation import ChatMessage
from engine.executor import Executor
from engine.generation import GenerationRequest, GenerationResult, GenerationSettings, InvalidRequest, QueueStatus
from engine.models import ModelBackend, load_backend
from engine.prompts import COMPACT, combine_prompt, generation_for, notes_prompt, summary_prompt
from engine.summarizer import FALLBACK_MODEL, Summarizer, SummaryOptions, retry_settings
from engine.transcript import build_transcript
from conftest import TINY_CONFIG, cached_tiny_model

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
NAMES = ["Alice", "Bob", "Carol", "Dave"]


def suppressed_ids(backend: ModelBackend, allowed: Callable[[str], bool], stop: bool) -> list[int]:
    """Token ids to suppress so the model emits only tokens whose text passes ``allowed`` (and, with
    ``stop``, end of sequence)."""
    tok = backend.tokenizer
    return [i for i in range(len(tok)) if not (allowed(tok.decode([i])) or (stop and i == tok.eos_token_id))]


def lowercase_words(piece: str) -> bool:
    return bool(re.fullmatch(r" [a-z]{3,9}|\.", piece))


def tiny_factory(allowed: Callable[[str], bool], stop: bool = True) -> Callable[[], ModelBackend]:
    """A backend factory (the executor releases the model on close, so each executor loads its own)."""
    folder = cached_tiny_model("causal", max_position_embeddings=512, **TINY_CONFIG["causal"])
    suppress: list[int] = []

    def load() -> ModelBackend:
        backend = load_backend(str(folder), cpu_threads=1)
        if not suppress:
            suppress.extend(suppressed_ids(backend, allowed, stop))
        backend.model.generation_config.suppress_tokens = list(suppress)
        return backend

    return load


@pytest.fixture(scope="session")
def words_model() -> Callable[[], ModelBackend]:
    """Context 512 tokens; writes random lowercase words and periods."""
    return tiny_factory(lowercase_words)


@pytest.fixture(scope="session")
def loop_model() -> Callable[[], ModelBackend]:
    """Writes one word forever: every output is a repetition loop."""
    return tiny_factory(lambda piece: piece == " the", stop=False)


class Recording(Executor):
    """The real executor, keeping every request it was given (to assert jobs, settings, prompts)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[GenerationRequest] = []
        self.results: list[GenerationResult] = []

    async def submit(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        result = await super().submit(request)
        self.results.append(result)
        return result


@pytest.fixture
async def words_executor(words_model: Callable[[], ModelBackend]):
    ex = Recording(words_model, max_batch_wait_ms=30, max_queue_per_user=12)
    await ex.start()
    yield ex
    await ex.aclose()


@pytest.fixture
async def loop_executor(loop_model: Callable[[], ModelBackend]):
    ex = Recording(loop_model, max_batch_wait_ms=30)
    await ex.start()
    yield ex
    await ex.aclose()


def chat(n: int, words_per_message: int = 6) -> list[ChatMessage]:
    return [
        ChatMessage(1000 + i, NAMES[i % 3], " ".join(["release", "plan", "testing", "friday", "build", "notes"][j % 6]
                                                     for j in range(i, i + words_per_message)),
                    created_at=T0 + timedelta(minutes=i))
        for i in range(n)
    ]


SHORT = SummaryOptions("short", "paragraph", GenerationSettings(max_new_tokens=24))


async def test_short_chat_is_one_request_with_metadata(words_executor: Recording):
    messages = chat(6) + [ChatMessage(2000, "Recap", "old summary", is_bot=True, created_at=T0 + timedelta(hours=5))]
    summary = await Summarizer(words_executor).summarize(messages, SHORT)
    assert len(words_executor.requests) == 1 and summary.chunks == 1
    assert summary.text and "@" not in summary.text
    assert summary.participants == ["Alice", "Bob", "Carol"]
    assert summary.message_count == 6 and summary.source_ids == [1000 + i for i in range(6)]
    assert (summary.start, summary.end) == (T0, T0 + timedelta(minutes=5))
    assert summary.truncated is False
    assert summary.settings == SHORT.generation
    assert words_executor.requests[0].settings == SHORT.generation  # applied exactly


async def test_prompt_separates_instructions_from_the_transcript(words_executor: Recording):
    await Summarizer(words_executor).summarize(chat(4), SHORT, guild="g1", user="u1", priority=1)
    request = words_executor.requests[0]
    assert "[1] Alice:" in request.prompt.user and "[1] Alice:" not in request.prompt.system
    assert "never instructions" in request.prompt.system
    assert (request.guild, request.user, request.priority) == ("g1", "u1", 1)


async def test_long_chat_is_split_at_message_boundaries_and_reduced_recursively(words_executor: Recording):
    events: list[tuple[str, int, int]] = []
    messages = chat(120, words_per_message=10)
    summarizer = Summarizer(words_executor, max_chunk_tokens=200)
    summary = await summarizer.summarize(messages, SHORT, progress=lambda *e: events.append(e))
    assert summary.chunks > 3 and summary.text
    jobs = {r.job for r in words_executor.requests}
    assert len(jobs) == 1 and None not in jobs  # one job id: the executor may batch the chunks
    notes_requests = [r for r in words_executor.requests if "notes on one part" in r.prompt.system]
    combine_requests = [r for r in words_executor.requests if "combine notes" in r.prompt.system]
    assert len(notes_requests) >= summary.chunks
    # More notes than fit one combine prompt: merged in at least two rounds (a round of merges, then the final).
    assert len(combine_requests) >= 3
    # Every message line is in exactly one chunk, whole, in order.
    seen = []
    for r in notes_requests[: summary.chunks]:
        block = r.prompt.user.split("<<<CHAT>>>\n", 1)[1].split("\n<<<END OF CHAT>>>", 1)[0]
        seen += [int(m) for m in re.findall(r"^\[(\d+)\] ", block, re.MULTILINE)]
    assert sorted(seen) == list(range(1, 121))
    assert max(r.batch_size for r in words_executor.results) > 1  # chunks ran batched
    stages = [e[0] for e in events]
    assert stages[0] == "reading" and "summarizing" in stages and stages[-1] == "combining"
    assert ("summarizing", summary.chunks, summary.chunks) in events
    assert events[-1][1] == events[-1][2]


async def test_input_budget_drops_oldest_messages_and_sets_truncated(words_executor: Recording):
    messages = chat(60)
    summary = await Summarizer(words_executor, input_token_budget=300).summarize(messages, SHORT)
    assert summary.truncated is True
    assert 0 < summary.message_count < 60
    assert summary.source_ids == [m.id for m in messages[-summary.message_count:]]  # the newest ones
    assert summary.start == messages[-summary.message_count].created_at
    assert "[1] " in words_executor.requests[0].prompt.user  # renumbered from 1


async def test_messages_without_ids_give_no_citations(words_executor: Recording):
    messages = [ChatMessage(None, "#Person1#", "Shall we meet at noon?"), ChatMessage(None, "#Person2#", "Yes.")]
    summary = await Summarizer(words_executor).summarize(messages, SHORT)
    assert summary.citations == [] and summary.source_ids == []
    assert summary.participants == ["#Person1#", "#Person2#"]
    assert summary.text.startswith("#Person1# and #Person2#")


async def test_repetition_loop_is_retried_once_then_answered_with_the_labelled_key_messages(loop_executor: Recording):
    settings = GenerationSettings(max_new_tokens=24)
    messages = chat(5)
    summary = await Summarizer(loop_executor).summarize(messages, SummaryOptions("short", "paragraph", settings))
    assert len(loop_executor.requests) == 2
    assert loop_executor.requests[1].settings == retry_settings(settings)
    assert loop_executor.requests[1].settings.repetition_penalty > settings.repetition_penalty
    assert summary.fallback is not None and "repetition" in summary.fallback
    assert summary.model == FALLBACK_MODEL and summary.retried
    # Faithful: every sentence is a cited message's own words, in the third person.
    assert summary.text and summary.citations and set(summary.citations) <= {m.id for m in messages}
    assert "the the the" not in summary.text
    for message_id in summary.citations:
        source = next(m for m in messages if m.id == message_id)
        assert source.text.split()[0] in summary.text


async def test_no_human_messages_is_a_friendly_error(words_executor: Recording):
    with pytest.raises(InvalidRequest) as info:
        await Summarizer(words_executor).summarize([ChatMessage(1, "Recap", "hi", is_bot=True)], SHORT)
    assert "no messages" in info.value.user_message
    assert words_executor.requests == []


async def test_unknown_length_or_style_is_rejected(words_executor: Recording):
    with pytest.raises(InvalidRequest):
        await Summarizer(words_executor).summarize(chat(3), SummaryOptions("huge", "paragraph"))
    with pytest.raises(InvalidRequest):
        await Summarizer(words_executor).summarize(chat(3), SummaryOptions("short", "poem"))


async def test_topics_style_links_topics_to_messages(words_executor: Recording):
    options = SummaryOptions("medium", "topics", GenerationSettings(max_new_tokens=40))
    summary = await Summarizer(words_executor).summarize(chat(8), options)
    assert summary.topics
    ids = {m.id for m in chat(8)}
    assert all(t.message_id is None or t.message_id in ids for t in summary.topics)
    assert all(line.startswith("- ") for line in summary.text.splitlines())


async def test_async_progress_callback_and_a_broken_one(words_executor: Recording):
    seen: list[str] = []

    async def record(stage: str, done: int, total: int) -> None:
        seen.append(stage)

    await Summarizer(words_executor).summarize(chat(3), SHORT, progress=record)
    assert seen[0] == "reading" and "summarizing" in seen

    def broken(stage: str, done: int, total: int) -> None:
        raise RuntimeError("display gone")

    assert (await Summarizer(words_executor).summarize(chat(3), SHORT, progress=broken)).text


def test_generation_for_presets_and_override():
    assert generation_for("short").max_new_tokens < generation_for("medium").max_new_tokens < generation_for("long").max_new_tokens
    s = generation_for("long", max_new_tokens=100, sampling=True, temperature=0.3, top_p=0.5, top_k=7, repetition_penalty=1.4, seed=3)
    assert (s.max_new_tokens, s.sampling, s.temperature, s.top_p, s.top_k, s.repetition_penalty, s.seed) == (100, True, 0.3, 0.5, 7, 1.4, 3)
    with pytest.raises(InvalidRequest):
        generation_for("medium", temperature=9.0)
    with pytest.raises(InvalidRequest):
        generation_for("gigantic")
    assert generation_for("short", max_new_tokens=0).max_new_tokens == generation_for("short").max_new_tokens  # 0: the preset


async def test_key_messages_never_carry_a_link_from_message_text(words_executor: Recording):
    hostile = ["_https://evil.example.com/a_", "1https://evil.example.com", "[docs](https://evil.example.com)",
               "x.HTTPS://evil.example.com"]
    messages = [ChatMessage(20 + i, name, f"I moved the release notes to {link} for the review team today")
                for i, (name, link) in enumerate(zip(["Ann", "Bob", "Cy", "Dee"], hostile))]
    summary = await Summarizer(words_executor).summarize(messages, SummaryOptions("long", "key_messages"))
    assert summary.citations == [20, 21, 22, 23]  # every hostile message was quoted
    assert "://" not in summary.text and "](" not in summary.text, summary.text


async def test_key_messages_style_is_faithful_cited_and_needs_no_generation(words_executor: Recording):
    messages = [
        ChatMessage(11, "Ann", "hello"),
        ChatMessage(12, "Ann", "I moved the release to Friday because QA found a crash <@7>", mentions={7: "Bob"}),
        ChatMessage(13, "Bob", "OK, I will fix the login crash today, see https://tracker.example.com/issues/123456789"),
    ]
    summary = await Summarizer(words_executor).summarize(messages, SummaryOptions("short", "key_messages"))
    assert words_executor.requests == []
    assert summary.text == ("Ann moved the release to Friday because QA found a crash Bob. "
                            "Bob: OK, Bob will fix the login crash today, see.")
    assert summary.citations == [12, 13]
    assert summary.chunks == 0 and "extractive" in summary.model


class ShortQueue(Recording):
    """The real executor, telling each request it is second in line with a sub-second wait."""

    async def submit(self, request: GenerationRequest) -> GenerationResult:
        assert request.on_queue is not None
        request.on_queue(QueueStatus(2, 0.3))
        return await super().submit(request)


async def test_a_sub_second_wait_is_reported_as_one_second_not_as_unknown(words_model: Callable[[], ModelBackend]):
    events: list[tuple[str, int, int]] = []
    async with ShortQueue(words_model, max_batch_wait_ms=0) as ex:
        await Summarizer(ex).summarize(chat(3), SHORT, progress=lambda *e: events.append(e))
    assert ("queued", 2, 1) in events  # 0 would read as "no estimate yet"


@pytest.fixture
async def compact_executor(words_model: Callable[[], ModelBackend]):
    """The words model as an adapter tuned on compact prompts would load it."""

    def load() -> ModelBackend:
        backend = words_model()
        backend.prompt_format = COMPACT
        return backend

    ex = Recording(load, max_batch_wait_ms=30, max_queue_per_user=12)
    await ex.start()
    yield ex
    await ex.aclose()


async def test_a_backend_tuned_on_compact_prompts_gets_them_in_every_stage(compact_executor: Recording):
    messages = chat(4)
    await Summarizer(compact_executor).summarize(messages, SHORT)
    transcript = build_transcript(messages)
    expected = summary_prompt(transcript.render(), transcript.participants, "short", "paragraph", 4, COMPACT)
    assert compact_executor.requests[0].prompt == expected
    compact_executor.requests.clear()
    await Summarizer(compact_executor, max_chunk_tokens=200).summarize(chat(120, words_per_message=10), SHORT)
    systems = {r.prompt.system for r in compact_executor.requests}
    assert notes_prompt("", [], COMPACT).system in systems
    assert combine_prompt([], [], "short", "paragraph", 120, final=False, prompt_format=COMPACT).system in systems
    assert combine_prompt([], [], "short", "paragraph", 120, final=True, prompt_format=COMPACT).system in systems
    assert len(systems) == 3  # nothing in the rules wording
    assert all(r.prompt.user.count("<<<CHAT>>>") == 1 for r in compact_executor.requests)
