"""Scoring summaries against references: data loading, ROUGE, lead-k baselines, absent names.

Kept free of the model stack so it can be tested and reused on its own; the
``eval`` run (``bot/eval_run.py``) runs the summarizer and calls into here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from bot.exports import ExportError, clean_str, decode_json, speaker_of

METRICS = ("rouge1", "rouge2", "rougeL")
REFERENCE_KEYS = ("summary", "summary1", "summary2", "summary3")

# A DialogSum speaker tag, and a capitalized word that could be a name.
_TAG_RE = re.compile(r"#[A-Za-z]+\d*#")
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_SENTENCE_END = (".", "!", "?", ":", ";", "\n", "-", "*", "•", "(", '"')
# Capitalized words that are not names even in the middle of a sentence.
_NOT_NAMES = {
    "I", "I'm", "I'll", "I've", "I'd", "OK", "Ok", "Mr", "Mrs", "Ms", "Dr", "Sir", "Madam", "Miss",
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December", "English", "Chinese", "Person", "Summary", "The", "Both", "They", "He", "She",
}


class EvalDataError(ExportError):
    """The data file can't be used. The message names the file and line (one line, like a bad export's)."""


@dataclass(frozen=True)
class EvalRecord:
    line: int  # 1-based line number in the data file, for messages
    dialogue: str
    references: tuple[str, ...]


def load_records(path: str | Path, limit: int | None = None) -> list[EvalRecord]:
    """Read a JSON Lines file of ``{"dialogue": ..., "summary" | "summary1".."summary3": ...}`` records."""
    file = Path(path)
    if not file.is_file():
        raise EvalDataError(f"{path}: no such file")
    records: list[EvalRecord] = []
    try:
        with file.open(encoding="utf-8-sig") as stream:  # a BOM, as summarize reads files
            for number, line in enumerate(stream, start=1):
                if limit is not None and len(records) >= limit:
                    break
                if line.strip():
                    records.append(parse_record(line, number, file.name))
    except UnicodeDecodeError as exc:
        raise EvalDataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise EvalDataError(f"{path}: can't be read ({exc.strerror or exc})") from None
    if not records:
        raise EvalDataError(f"{path}: no records (expected one JSON object per line with \"dialogue\" and \"summary\")")
    return records


def parse_record(line: str, number: int, source: str) -> EvalRecord:
    try:
        data = decode_json(line, source, line=number)
    except ExportError as exc:
        raise EvalDataError(str(exc)) from None
    if not isinstance(data, dict):
        raise EvalDataError(f"{source}: line {number}: expected a JSON object")
    dialogue = data.get("dialogue")
    if not isinstance(dialogue, str) or not dialogue.strip():
        raise EvalDataError(f"{source}: line {number}: \"dialogue\" is missing or empty")
    references = tuple(data[k].strip() for k in REFERENCE_KEYS if isinstance(data.get(k), str) and data[k].strip())
    if not references:
        raise EvalDataError(f"{source}: line {number}: no reference summary (\"summary\" or \"summary1\"..\"summary3\")")
    # JSON "\ud800" escapes give lone surrogates, which tokenizers refuse: cleaned as summarize cleans exports.
    return EvalRecord(number, clean_str(dialogue), tuple(clean_str(r) for r in references))


def lead_k(dialogue: str, k: int) -> str:
    """The first ``k`` non-blank lines of the dialogue, speaker tags kept (the usual lead baseline)."""
    lines = [line.strip() for line in dialogue.splitlines() if line.strip()]
    return "\n".join(lines[:k])


class RougeScorer:
    """ROUGE-1/2/L F1 with Porter stemming; the best reference counts for each metric."""

    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)

    def score(self, prediction: str, references: Sequence[str]) -> dict[str, float]:
        best = {metric: 0.0 for metric in METRICS}
        for reference in references:
            scores = self._scorer.score(reference, prediction)
            for metric in METRICS:
                best[metric] = max(best[metric], scores[metric].fmeasure)
        return best

    def corpus(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
        """Mean F1 over the set, as percentages rounded to 2 decimals."""
        if len(predictions) != len(references):
            raise ValueError("one prediction per record is needed")
        totals = {metric: 0.0 for metric in METRICS}
        for prediction, refs in zip(predictions, references):
            for metric, value in self.score(prediction, refs).items():
                totals[metric] += value
        n = max(len(predictions), 1)
        return {metric: round(100 * totals[metric] / n, 2) for metric in METRICS}


def speaker_names(dialogue: str) -> set[str]:
    """Speaker labels of a ``Name: text`` dialogue."""
    names = set()
    for line in dialogue.splitlines():
        found = speaker_of(line)
        if found is not None:
            names.add(found[0])
    return names


def copies_a_message(summary: str, dialogue: str) -> bool:
    """The summary is (mostly) one message copied: a shared run of words covering 80% of it."""
    from difflib import SequenceMatcher

    out = [w.lower() for w in _WORD_RE.findall(summary)]
    if len(out) < 4:
        return False
    for line in dialogue.splitlines():
        found = speaker_of(line)
        src = [w.lower() for w in _WORD_RE.findall(found[1] if found else line)]
        if src and SequenceMatcher(None, out, src, autojunk=False).find_longest_match(0, len(out), 0, len(src)).size >= 0.8 * len(out):
            return True
    return False


def absent_names(summary: str, dialogue: str, participants: Iterable[str] = ()) -> list[str]:
    """Names in ``summary`` that appear nowhere in the conversation: a rough hallucination check.

    A name is a ``#PersonN#`` tag, or a capitalized word that does not start a
    sentence. It counts as absent when it is not a participant and does not
    occur (case-insensitively, as a word, or as the stem of one with a plain
    ending such as "-ing") anywhere in the dialogue; a contraction ("Cyrus'll")
    is judged by the name before it. Simple on
    purpose: it misses invented lowercase words and can flag a proper noun such
    as a product name that the model added.
    """
    known_tags = set(_TAG_RE.findall(dialogue)) | {p for p in participants if _TAG_RE.fullmatch(p)}
    known_words = {w.lower() for w in _WORD_RE.findall(dialogue)}
    for participant in participants:
        known_words.update(w.lower() for w in _WORD_RE.findall(participant))
    found: list[str] = []
    for tag in _TAG_RE.findall(summary):
        if tag not in known_tags and tag not in found:
            found.append(tag)
    text = _TAG_RE.sub(" ", summary)
    for match in _WORD_RE.finditer(text):
        word = match.group(0).rstrip("'-")
        if not word[:1].isupper() or word in _NOT_NAMES or len(word) < 2 or word.isupper():
            continue
        before = text[: match.start()].rstrip()
        if not before or before.endswith(_SENTENCE_END):
            continue  # sentence-initial capitals say nothing about names
        base = _CONTRACTION_RE.sub("", word)
        if not _known(base.lower(), known_words) and base not in found:
            found.append(base)
    return found


# "Cyrus'll", "Ann's": the name is the part before the contraction.
_CONTRACTION_RE = re.compile(r"'(?:s|ll|d|ve|re|m)$", re.IGNORECASE)
# A chat word that is the summary's word plus one of these is the same word ("shop" in "shopping").
_SUFFIXES = ("s", "es", "ed", "er", "ers", "ing", "ings")


def _known(word: str, known_words: set[str]) -> bool:
    """``word`` occurs in the chat, or as the stem of a chat word ("E-Shop" for "E-shopping")."""
    if word in known_words:
        return True
    if len(word) < 4:
        return False  # a short name ("Ann", "Ed") may prefix any word ("announce", "edit")
    for known in known_words:
        rest = known[len(word):]
        if known.startswith(word) and rest and (
            rest in _SUFFIXES or (rest[0] == word[-1] and rest[1:] in _SUFFIXES)  # "shopping": doubled p
        ):
            return True
    return False
