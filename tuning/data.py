"""Training examples for ``finetune``: dialogue/summary pairs turned into exactly what serving sees.

Each record goes through the bot's own path: ``parse_transcript`` ->
``build_transcript`` -> ``summary_prompt`` (or ``notes_prompt``) -> the
backend's ``render``. Only the answer differs from serving: it is the
reference summary, not a generation. DialogSum's ``#Person1#`` tags are
replaced by names (consistent within a record, varied across records,
seeded), so the model learns to name people the way a chat shows them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from engine.conversation import ChatMessage
from engine.prompts import LENGTHS, RULES, combine_prompt, notes_prompt, summary_prompt, target_words
from engine.speakers import NAMES as SPEAKER_NAMES, check_speakers, tag_names, tag_transcript
from engine.transcript import Line, Transcript, build_transcript, content_words

from .scoring import EvalRecord
from bot.exports import ExportError, parse_transcript

# Given names from many languages, for the #PersonN# tags. Short and unambiguous as words.
NAMES = tuple(
    """Amara Ben Chloe Dmitri Elena Farid Grace Hiro Ines Jamal Keiko Liam Maya Noah Olga Pedro Quinn Rosa Sami Tara
    Umar Vera Wei Ximena Yusuf Zoe Aisha Bruno Carmen Diego Emma Felix Gita Hugo Ivy Jonas Kofi Lena Marco Nadia
    Oscar Priya Rafael Sofia Tomas Uma Victor Wanda Yara Zane Anya Boris Clara Dev Eliza Finn Hana Igor Julia Kai
    Lucia Mateo Nora Omar Paula Ravi Sana Theo Ana Bilal Daria Eric Fatima Goran Helen Ali Jin Karin Leo Mira Nils
    Ola Pablo Rina Sven Tiago Ulla Vik Wren Yosef Zara Arjun Bea Cyrus Dana Emil Freya Gus Hilde Ibrahim Jade""".split()
)
TAG_RE = re.compile(r"#([A-Za-z]+\d*)#")
# A sentence ends at . ! ? before a capital, except after a title ("Mr. Smith").
_SENTENCE_SPLIT = re.compile(
    r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bJr\.)(?<!\bSr\.)(?<!\bProf\.)"
    r"(?<=[.!?])\s+(?=[A-Z0-9#\"'])"
)
_CITE_MIN_SHARED = 2  # content words a sentence must share with a message to cite it

# What share of the records is also used for the other honest variants (each record once per variant).
BULLETS_SHARE = 0.15  # bullets made from the reference's sentences (only for references of 2+ sentences)
NOTES_SHARE = 0.10  # the map stage's notes prompt, answered with the reference
# Synthetic long channels for the map and combine stages: one per CHANNEL_EVERY records, each made of
# 3 to 5 records' dialogues (a 4-part channel of DialogSum is about as long as two default chunks).
CHANNEL_EVERY = 25
CHANNEL_PARTS = (3, 5)


class FinetuneDataError(ExportError):
    """The training data can't be used. The message names the file and line (one line, like a bad export's)."""


@dataclass(frozen=True)
class TextExample:
    """One training pair as text: the rendered prompt's parts and the answer the model should write."""

    line: int  # record line in the data file
    kind: str  # "paragraph", "bullets", "notes"; "channel-notes", "channel-combine" (synthetic long channels)
    length: str
    prompt_system: str
    prompt_user: str
    answer: str


def name_map(dialogue: str, summary: str, rng: random.Random, cast: tuple[str, ...] = NAMES) -> dict[str, str]:
    """``#Person1#`` -> a name from ``cast``, distinct within the record and absent from its text."""
    tags = list(dict.fromkeys(TAG_RE.findall(dialogue) + TAG_RE.findall(summary)))
    text_words = {w.lower() for w in re.findall(r"[A-Za-z]+", TAG_RE.sub(" ", dialogue + " " + summary))}
    pool = [n for n in cast if n.lower() not in text_words]
    if len(pool) < len(tags):  # a small cast that the text already uses: fall back to every name
        pool = [n for n in NAMES if n.lower() not in text_words]
    chosen = rng.sample(pool, k=min(len(tags), len(pool)))
    return {f"#{tag}#": name for tag, name in zip(tags, chosen)}


def substitute(text: str, names: dict[str, str]) -> str:
    return TAG_RE.sub(lambda m: names.get(m.group(0), m.group(0)), text)


def with_names(record: EvalRecord, seed: int) -> EvalRecord:
    """The record with its ``#PersonN#`` tags replaced by seeded names in the dialogue and every reference,
    the same name for the same tag: scored this way, a data set reads like a real chat."""
    names = name_map(record.dialogue, " ".join(record.references), random.Random(f"{seed}:{record.line}"))
    return EvalRecord(record.line, substitute(record.dialogue, names), tuple(substitute(r, names) for r in record.references))


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text.strip()) if s.strip()]


def cite(summary_sentences: list[str], lines: Sequence[Line]) -> list[str]:
    """Each sentence with ``[n]`` of the message (among ``lines``, by its transcript number) it shares most
    content words with (at least two), the citation style the prompt asks for; sentences with no clear
    source stay uncited."""
    line_words = [(line.index, set(content_words(line.body))) for line in lines]
    out = []
    for sentence in summary_sentences:
        wanted = set(content_words(sentence))
        best, best_shared = 0, _CITE_MIN_SHARED - 1
        for index, have in line_words:
            shared = len(wanted & have)
            if shared > best_shared:
                best, best_shared = index, shared
        if best:
            match = re.search(r"[.!?]+[\"')]*$", sentence)
            cut = match.start() if match else len(sentence)
            sentence = f"{sentence[:cut]} [{best}]{sentence[cut:]}"
        out.append(sentence)
    return out


def length_for(summary: str, line_count: int) -> str:
    """The smallest preset whose word target holds the reference, so the instruction tells the truth."""
    words = len(summary.split())
    for name in LENGTHS:
        if words <= target_words(name, line_count):
            return name
    return list(LENGTHS)[-1]


def examples_for(record: EvalRecord, seed: int, prompt_format: str = RULES, speakers: str = SPEAKER_NAMES) -> list[TextExample]:
    """The training pairs one record yields: always a paragraph; sometimes bullets and notes, every prompt
    in ``prompt_format`` (``engine.prompts``), the wording the summarizer then serves the adapter with.

    The serving prompt's written answer start ("A and B discuss") is left out: it steers the base
    model, but references do not start that way. An adapter records this (``ADAPTER_META``) and
    the summarizer then writes no answer start for it."""
    rng = random.Random(f"{seed}:{record.line}")
    reference = record.references[0]
    names = name_map(record.dialogue, reference, rng)
    dialogue, summary = substitute(record.dialogue, names), substitute(reference, names)
    try:
        messages = parse_transcript(dialogue, f"record on line {record.line}").messages
    except ExportError as exc:
        raise FinetuneDataError(str(exc)) from None
    transcript = build_transcript(messages)
    if not transcript.lines:
        raise FinetuneDataError(f"line {record.line}: the dialogue has no messages")
    n = len(transcript.lines)
    parts = cite(sentences(summary), transcript.lines)
    people, text, parts = _as_seen(transcript, transcript.lines, parts, speakers)
    out: list[TextExample] = []

    def add(kind: str, length: str, prompt, answer: str) -> None:  # noqa: ANN001 - a Prompt
        out.append(TextExample(record.line, kind, length, prompt.system, prompt.user, answer))

    length = length_for(summary, n)
    add("paragraph", length, summary_prompt(text, people, length, "paragraph", n, prompt_format), " ".join(parts))
    if len(parts) >= 2 and rng.random() < BULLETS_SHARE:
        bullets = "\n".join(f"- {p}" for p in parts)
        add("bullets", length, summary_prompt(text, people, length, "bullets", n, prompt_format), bullets)
    if rng.random() < NOTES_SHARE:
        add("notes", "notes", notes_prompt(text, people, prompt_format), " ".join(parts))
    return out


def _as_seen(transcript: Transcript, lines: Sequence[Line], answers: list[str], speakers: str) -> tuple[list[str], str, list[str]]:
    """The participants, the rendered ``lines`` and the ``answers`` as the model sees them: with names, or
    with speaker tags (``engine.speakers``) in the transcript and the answers alike."""
    if check_speakers(speakers) == SPEAKER_NAMES:
        return list(transcript.participants), transcript.render(list(lines)), answers
    tagged, names = tag_transcript(transcript)
    wanted = {line.index for line in lines}
    return (list(tagged.participants), tagged.render([line for line in tagged.lines if line.index in wanted]),
            [tag_names(answer, names) for answer in answers])


def fit_merge(parts: list[list[str]], words: int) -> list[str]:
    """The parts' sentences in order, cut to about ``words``: sentences are kept round-robin (every part's
    first sentence, then every part's second, ...) while they fit, so each part stays represented."""
    chosen: set[tuple[int, int]] = set()
    used = 0
    for depth in range(max((len(p) for p in parts), default=0)):
        for number, part in enumerate(parts):
            if depth < len(part):
                size = len(part[depth].split())
                if chosen and used + size > words:
                    continue
                chosen.add((number, depth))
                used += size
    return [sentence for number, part in enumerate(parts) for depth, sentence in enumerate(part) if (number, depth) in chosen]


def channel_examples(records: Sequence[EvalRecord], seed: int, prompt_format: str = RULES,
                     speakers: str = SPEAKER_NAMES) -> list[TextExample]:
    """A synthetic long channel: ``records``' dialogues one after another, as one conversation numbered
    throughout, with names from one small cast (people recur, as in a real channel). The map stage learns
    one part's notes (that dialogue's reference, cited by the channel's numbers); the combine stage learns
    the final summary from the parts' notes, whose target is the notes merged in order and cut to the length.
    Labelled ``channel-notes`` and ``channel-combine``: the channels are made, not real."""
    rng = random.Random(f"{seed}:channel:{records[0].line}")
    cast = tuple(rng.sample(NAMES, 6))
    messages: list[ChatMessage] = []
    bounds: list[int] = []  # where each part's messages end
    summaries: list[str] = []
    for record in records:
        names = name_map(record.dialogue, record.references[0], rng, cast)
        try:
            messages.extend(parse_transcript(substitute(record.dialogue, names), f"record on line {record.line}").messages)
        except ExportError as exc:
            raise FinetuneDataError(str(exc)) from None
        bounds.append(len(messages))
        summaries.append(substitute(record.references[0], names))
    transcript = build_transcript(messages)
    n = len(transcript.lines)
    parts: list[list[Line]] = [[] for _ in records]
    for line in transcript.lines:
        parts[next(i for i, end in enumerate(bounds) if line.position < end)].append(line)
    notes = [" ".join(cite(sentences(summary), lines)) for summary, lines in zip(summaries, parts)]
    out: list[TextExample] = []
    first = records[0].line
    shown = rng.randrange(len(parts))  # one part's notes per channel: single dialogues already teach notes
    people, part_text, notes = _as_seen(transcript, parts[shown], notes, speakers)
    if parts[shown]:
        prompt = notes_prompt(part_text, people, prompt_format)
        out.append(TextExample(first, "channel-notes", "notes", prompt.system, prompt.user, notes[shown]))
    length = rng.choice(list(LENGTHS))
    style = "bullets" if rng.random() < BULLETS_SHARE else "paragraph"
    merged = fit_merge([sentences(note) for note in notes], target_words(length, n))
    if not merged:  # references with no sentence at all: nothing to learn the combine stage from
        return out
    answer = "\n".join(f"- {s}" for s in merged) if style == "bullets" else " ".join(merged)
    prompt = combine_prompt(notes, people, length, style, n, final=True, prompt_format=prompt_format)
    out.append(TextExample(first, "channel-combine", length, prompt.system, prompt.user, answer))
    return out


def build_examples(records: Sequence[EvalRecord], seed: int, prompt_format: str = RULES,
                   speakers: str = SPEAKER_NAMES) -> list[TextExample]:
    """Every record's examples, then the synthetic long channels (one per ``CHANNEL_EVERY`` records,
    made of ``CHANNEL_PARTS`` records drawn with the seed)."""
    out: list[TextExample] = []
    for record in records:
        out.extend(examples_for(record, seed, prompt_format, speakers))
    order = list(records)
    random.Random(f"{seed}:channels").shuffle(order)
    rng = random.Random(f"{seed}:channel-sizes")
    start = 0
    for _ in range(len(order) // CHANNEL_EVERY):
        size = rng.randint(*CHANNEL_PARTS)
        group = order[start:start + size]
        start += size
        if len(group) >= CHANNEL_PARTS[0]:
            out.extend(channel_examples(group, seed, prompt_format, speakers))
    return out
