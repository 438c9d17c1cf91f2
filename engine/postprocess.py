"""Turn raw model output into a safe, faithful summary, or say why it is unusable.

Small models echo the prompt, open with "Sure! Here is a summary:", stop
mid-sentence, loop, copy the transcript, invent names and links, and can be
talked into following a message's instructions. Each of those is either
repaired here (preambles, mentions, URLs, bad citations, dangling sentence) or
reported as a ``problem`` so the summarizer retries with other settings.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from .speakers import TAG_IN_OUTPUT
from .transcript import Transcript, remove_until_stable
from .transcript import strip_control as strip_transcript_control

# Our own data markers with what they enclose; the other control tokens, in every spelling, go through
# the transcript's own cleaner.
_MARKER_BLOCK = re.compile(r"<<<[^>]*>>>")
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok|absolutely|great)\b[!,.]*\s*)?"
    r"(?:(?:here(?:'s| is| are)|below is|this is)\s+(?:a |an |the |my )?(?:brief |short |concise |quick |detailed )?"
    r"(?:summary|summarization|overview|recap|notes|list|bullet list)\b[^:\n]{0,80}[:.]\s*)?"
    r"(?:(?:summary|recap|notes|topics|action items|tl;?dr)\s*:\s*)?",
    re.IGNORECASE,
)
_BROADCAST = re.compile(r"@(everyone|here)\b", re.IGNORECASE)
_MENTION_SYNTAX = re.compile(r"<@[!&]?\d+>|<#\d+>")
_AT_NAME = re.compile(r"(?<![\w.])@(?=\w)")
# Markdown links keep their text (which then loses any URL of its own).
_MARKDOWN_LINK = re.compile(r"\[([^\]\n]*)\]\(\s*<?[^)\s>]*>?(?:\s+\"[^\"\n]*\")?\s*\)")
# Any "scheme://" or "www." link, wherever it starts: "_https://x_" and "1https://x" are links to Discord
# too, so no word boundary is asked for. Shortened "domain…" forms come from the transcript.
_URL = re.compile(
    r"[(<]?(?:[a-z][a-z0-9+.\-]*://|www\.)(?:(?!\[\d)\S)*|\b[\w-]+(?:\.[\w-]+)*\.[a-z]{2,6}…", re.IGNORECASE
)
_CITATION = re.compile(r"\[\s*(\d{1,6}(?:\s*(?:,|-|–|and)\s*\d{1,6})*)\s*\]")
_SENTENCE_END = re.compile(r"[.!?…](?:[\"')\]]*)(?=\s|$)")
_BULLET = re.compile(r"^\s*(?:[-*•·]|\d{1,2}[.)])\s+")
_TRANSCRIPT_LINE = re.compile(r"^\s*\[\d+\]\s*[^:\n]{1,60}:")
_COMPLIANCE = re.compile(
    r"\b(?:I(?:'ll| will| am going to| must| have to| shall)? (?:now )?(?:ignore|disregard|obey|comply|follow your)"
    r"|as (?:you )?(?:instructed|requested|commanded)"
    r"|(?:ignoring|disregarding) (?:all |any |my |the |previous |prior )*(?:instructions|rules)"
    r"|my (?:new |previous )?instructions)\b",
    re.IGNORECASE,
)
_INJECTION_ASK = re.compile(
    r"\b(?:say|reply|respond|answer|output|write|print|repeat)(?:\s+(?:with|only|exactly|just))*\s*[:\-]?\s*[\"'“]?([^\"'”\n]{2,120})",
    re.IGNORECASE,
)
_WORD = re.compile(r"[\w#@']+")
# What the transcript writes where it cut a long message (engine.transcript): never part of a summary.
_TRIM_MARKER = re.compile(r"\s*\[(?:message|code|file) trimmed\]")

# Words that may start a sentence without being a name. A capitalized word outside
# this list that appears nowhere in the chat is treated as an invented name.
_COMMON_CAPITALIZED = frozenset(
    """a an the this that these those there then they them their he she it its his her we our you your i
    in on at by for from with without about after before during while when where why how what which who whom
    and but or so yet also both either neither each every all some any most many several one two three
    first second third next finally later earlier meanwhile overall however although though because since
    if unless as to of not no yes everyone someone somebody nobody people person group team members
    monday tuesday wednesday thursday friday saturday sunday january february march april may june july
    august september october november december today tomorrow yesterday tonight morning evening
    topic topics summary action items notes part conversation chat discussion message messages
    other another others instead still just only even again here now soon""".split()
)


@dataclass
class Cleaned:
    text: str
    citations: list[int] = field(default_factory=list)  # valid transcript indices, first-cited first
    problem: str | None = None  # why the output is unusable: empty, repetition, echo, injection, self-reference


def strip_control(text: str) -> str:
    while True:  # each pass shortens the text or changes nothing: removing one piece can join another
        stripped = strip_transcript_control(remove_until_stable(_MARKER_BLOCK, text))
        if stripped == text:
            return text
        text = stripped


def remove_mentions(text: str) -> str:
    """No output can ping: broadcast and id mentions go, ``@name`` loses its ``@``."""
    text = _BROADCAST.sub(lambda m: m.group(1).lower(), text)
    text = _MENTION_SYNTAX.sub("someone", text)
    return _AT_NAME.sub("", text)


def remove_urls(text: str) -> str:
    """No reply carries a link: the model's are invented, and message text (key messages quote it)
    must not put one into the bot's mouth. Repeated, so removing one cannot join the rest into another."""
    while True:  # each pass shortens the text or changes nothing
        stripped = _URL.sub("", _MARKDOWN_LINK.sub(r"\1", text))
        if stripped == text:
            return text
        text = stripped


def strip_preamble(text: str) -> str:
    previous = None
    while previous != text:
        previous = text
        text = _PREAMBLE.sub("", text, count=1).lstrip()
    return text


def extract_citations(text: str, transcript: Transcript, keep_markers: bool = False) -> tuple[str, list[int]]:
    """Find ``[n]`` markers; keep the indices that exist in the transcript.

    Markers are removed from the text, or with ``keep_markers`` rewritten to hold
    only valid indices (notes keep them so the combine stage can carry them on).
    """
    found: list[int] = []

    def take(match: re.Match[str]) -> str:
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        if re.search(r"[-–]", match.group(1)) and len(numbers) == 2 and 0 < numbers[1] - numbers[0] <= 20:
            numbers = list(range(numbers[0], numbers[1] + 1))
        valid = [n for n in numbers if transcript.has_index(n)]
        for n in valid:
            if n not in found:
                found.append(n)
        if keep_markers and valid:
            return "[" + ", ".join(str(n) for n in valid) + "]"
        return ""

    return _CITATION.sub(take, text), found


def end_on_sentence(text: str) -> str:
    """Drop a dangling, unfinished last sentence (kept when it is the only one)."""
    text = text.rstrip()
    if not text or text[-1] in ".!?…\"')]":
        return text
    ends = list(_SENTENCE_END.finditer(text))
    if not ends:
        return text
    return text[: ends[-1].end()].rstrip()


def fit_length(text: str, max_words: int) -> str:
    """Whole sentences (or lines) up to ``max_words``; the first is always kept."""
    kept: list[str] = []
    count = 0
    for line in text.splitlines():
        parts = [line] if _BULLET.match(line) else re.split(r"(?<=[.!?])\s+", line)
        out = []
        for part in parts:
            size = len(part.split())
            if kept or out:
                if count + size > max_words:
                    break
            out.append(part)
            count += size
        if out:
            kept.append(" ".join(out))
        if count >= max_words or len(out) < len(parts):
            break
    return "\n".join(kept)


def as_bullets(text: str) -> str:
    """One ``- `` line per point: bullet lines kept, prose split into its sentences."""
    items: list[str] = []
    for line in text.splitlines():
        if _BULLET.match(line):
            items.append("- " + _BULLET.sub("", line, count=1).strip())
        else:
            items.extend(f"- {part.strip()}" for part in re.split(r"(?<=[.!?])\s+", line) if part.strip())
    return "\n".join(item for item in items if item.strip("- "))


def _as_prose(line: str) -> str:
    """A bullet item asked for as prose: its marker goes and it ends as a sentence ("- Jonah agrees" -> "Jonah agrees.")."""
    if not _BULLET.match(line):
        return line
    item = _BULLET.sub("", line, count=1).strip()
    return item if not item or item[-1] in ".!?…\"')]:" else item + "."


def tidy_spaces(text: str) -> str:
    lines = []
    for line in text.splitlines():
        line = re.sub(r"[ \t]+", " ", line).strip()
        line = re.sub(r"\s+([,.;:!?])", r"\1", line)
        line = re.sub(r"\(\s*\)", "", line).strip()
        if line:
            lines.append(line)
    return "\n".join(lines)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def is_repetitive(text: str) -> bool:
    """A loop: few distinct words, or one phrase repeated over much of the text."""
    tokens = words(text)
    if len(tokens) < 12:
        return False
    if len(set(tokens)) / len(tokens) < 0.3:
        return True
    for n in (3, 5, 8):
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        if grams:
            gram, count = grams.most_common(1)[0]
            if count >= 3 and count * n >= 0.4 * len(tokens):
                return True
    return False


def is_echo(text: str, transcript_text: str) -> bool:
    """Copied transcript: transcript-formatted lines, or one verbatim run covering most of the output."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and sum(bool(_TRANSCRIPT_LINE.match(line)) for line in lines) >= max(1, len(lines) * 0.5):
        return True
    out, src = words(text), words(transcript_text)
    if len(out) < 8 or not src:
        return False
    match = SequenceMatcher(None, out, src, autojunk=False).find_longest_match(0, len(out), 0, len(src))
    return match.size >= 0.8 * len(out)


def injected_targets(transcript: Transcript) -> list[str]:
    """Phrases that messages ask the model to say, from messages that look like instructions to it."""
    targets = []
    for line in transcript.lines:
        body = line.text.split(":", 1)[-1]
        if not re.search(r"\b(ignore|disregard|forget|instructions|system prompt|you are now|you must|assistant|summar)", body, re.IGNORECASE):
            continue
        for match in _INJECTION_ASK.finditer(body):
            phrase = " ".join(words(match.group(1)))
            if len(phrase) >= 3:
                targets.append(phrase)
    return targets


def follows_injection(text: str, transcript: Transcript) -> bool:
    """The output obeys a message instead of summarizing it."""
    if _COMPLIANCE.search(text):
        return True
    out = " ".join(words(text))
    for target in injected_targets(transcript):
        # Mostly the requested phrase, with little summary around it.
        if target and target in out and len(target) >= 0.5 * len(out):
            return True
    return False


def invented_names(sentence: str, known_words: set[str]) -> list[str]:
    found = []
    for match in re.finditer(r"\b[A-Z][a-z]{1,}(?:'s)?\b", sentence):
        word = match.group(0).removesuffix("'s").lower()
        if word not in known_words and word not in _COMMON_CAPITALIZED:
            found.append(match.group(0))
    # A speaker tag (engine.speakers) of nobody in the chat: "Person" alone reads as a common word above.
    for match in TAG_IN_OUTPUT.finditer(sentence):
        if f"#person{match.group(1)}#" not in known_words:
            found.append(match.group(0))
    return found


def drop_invented(text: str, transcript_text: str) -> tuple[str, bool]:
    """Remove sentences that name someone or something capitalized that the chat never mentions."""
    known = set(words(transcript_text))
    kept_lines, dropped = [], False
    for line in text.splitlines():
        parts = re.split(r"(?<=[.!?])\s+", line)
        kept = [p for p in parts if not invented_names(p, known)]
        dropped |= len(kept) != len(parts)
        if kept:
            kept_lines.append(" ".join(kept))
    return "\n".join(kept_lines), dropped


_SENTENCES = re.compile(r"(?<=[.!?])\s+")
# Sentences this alike (word sequences) say the same thing: the later one is a repeat with a changed detail.
NEAR_DUPLICATE = 0.75


# Between a sentence's subject and a later mention of the same person, these open a clause of its own
# ("Ines is upset because Ines ...", "Helen says Helen will come"), where the person may rightly recur.
_CLAUSE_OPENERS = frozenset(
    """because since if whether that when while although though as after before until unless who whom whose
    which where why how than says said say thinks thought think believes believe hopes hope knows know feels
    feel guesses admits explains claims realizes realises finds hears wonders supposes decides worries wishes
    wants expects promises remembers forgets insists suggests""".split()
)
_SUBJECT_WITHIN = 2  # the subject is among the sentence's first words ("Then Theo sends ...")
# After a later mention, these make it the subject of a clause of its own ("..., so Felix asks", "Nora is").
_AUXILIARIES = frozenset("is was are were will would can could should shall may might must has had have does did "
                         "doesn't didn't isn't wasn't won't can't couldn't hasn't".split())


def _possessive_at(sentence: str, end: int) -> bool:
    return sentence[end:end + 2] in ("'s", "’s") or sentence[end:end + 3] in ("' s",)


def _starts_a_clause(after: str) -> bool:
    """The words after a mention make it a subject: an auxiliary, or a verb in -s/-ed."""
    following = after.split()[:1]
    word = following[0].lower().strip(",.;:!?") if following else ""
    return word in _AUXILIARIES or (len(word) > 3 and (word.endswith("s") or word.endswith("ed")))


def self_references(sentence: str, participants: list[str], transcript: Transcript) -> list[str]:
    """Participants a sentence makes act on themselves ("Theo sends the patch to Theo", "Inez invites
    Inez"): a small model's tangle of two people.

    Only the sentence's subject (a participant among its first words, not a possessive) is judged, and
    only when it comes back later as an object in its own clause: no other name and no clause opener
    ("because", "says", "that"...) in between, not a possessive, not the subject of a new clause ("..., so
    Felix asks"). Measured on DialogSum's dev references (886 sentences by people): 113 were flagged by
    the earlier "a name twice" rule, 1 by this one. Kept when the chat itself has that person naming themselves."""
    mentions = {name: re.compile(rf"(?<![\w#@]){re.escape(name)}(?![\w#])") for name in participants if len(name) >= 2}
    spans = [(m.start(), m.end(), name) for name, pattern in mentions.items() for m in pattern.finditer(sentence)]
    if len(spans) < 2:
        return []
    spans.sort()
    start, end, subject = spans[0]
    if len(sentence[:start].split()) >= _SUBJECT_WITHIN or _possessive_at(sentence, end):
        return []
    for later_start, later_end, name in spans[1:]:
        between = sentence[end:later_start]
        if name != subject:
            return []  # another person first: the clause has moved on
        words_between = [w.strip(",;:()\"") for w in between.split()]
        if not words_between or _possessive_at(sentence, later_end):
            continue  # "Tara tells Pablo Pablo ..." or a possessive
        # A relative clause set off by commas ("..., which is lost in the merge, and recommends it to Theo")
        # closes again: only the last comma-separated stretch says which clause the mention is in.
        last_stretch = [w.strip(",;:()\"").lower() for w in between.rsplit(",", 1)[-1].split()]
        if (any(w in _CLAUSE_OPENERS for w in last_stretch) or re.search(r"[;:]", between)
                or any(w[:1].isupper() and w.lower() not in _COMMON_CAPITALIZED for w in words_between)
                or _starts_a_clause(sentence[later_end:])):
            return []  # a clause of its own, or someone else named in between ("Finn asks Adam to show Finn")
        if any(line.author == subject and mentions[subject].search(line.body) for line in transcript.lines):
            return []
        return [subject]
    return []


def drop_near_duplicates(text: str, participants: list[str]) -> str:
    """Drop a sentence (or line) that repeats an earlier one with a changed detail. One about other people
    ("Ann brings the cake." after "Bo brings the cake.") is a fact of its own and stays."""
    names = {name.lower() for name in participants}
    kept_lines: list[str] = []
    seen: list[tuple[list[str], set[str]]] = []
    for line in text.splitlines():
        kept = []
        for part in [line] if _BULLET.match(line) else _SENTENCES.split(line):
            tokens = words(part)
            people = names.intersection(tokens)
            if tokens and any(people == their_people and SequenceMatcher(None, tokens, other, autojunk=False).ratio()
                              >= NEAR_DUPLICATE for other, their_people in seen):
                continue
            seen.append((tokens, people))
            kept.append(part)
        if kept:
            kept_lines.append(" ".join(kept))
    return "\n".join(kept_lines)


def clean_output(
    raw: str, transcript: Transcript, *, echo_source: str | None, finished: bool, listing: bool, keep_markers: bool = False
) -> Cleaned:
    """Repair what can be repaired; name the problem when the output is unusable.

    ``echo_source`` is the transcript text the model read (None for combine
    stages, whose input is notes it may legitimately repeat); ``listing`` is True
    for line-per-item styles, where a cut generation loses its last line.
    """
    text = strip_control(raw).strip()
    text = strip_preamble(text)
    if echo_source is not None and is_echo(text, echo_source):
        return Cleaned("", problem="echo")
    if follows_injection(text, transcript):
        return Cleaned("", problem="injection")
    text = _TRIM_MARKER.sub("", remove_urls(remove_mentions(text)))
    text, citations = extract_citations(text, transcript, keep_markers)
    text = tidy_spaces(text)
    if listing:
        lines = [_BULLET.sub("- ", line) if _BULLET.match(line) else line for line in text.splitlines()]
        if not finished and len(lines) > 1:
            lines = lines[:-1]
        # "- 1. item" (a numbered list after the written "- ") -> "- item"; empty items go.
        lines = [re.sub(r"^- (?:\d{1,2}[.)]\s*)+", "- ", line) for line in lines]
        text = "\n".join(line for line in lines if len(words(line)) >= 2)
    else:
        text = " ".join(_as_prose(line) for line in text.splitlines())
        text = end_on_sentence(text)
    text, _ = drop_invented(text, transcript.render())
    text = tidy_spaces(drop_near_duplicates(text, transcript.participants))
    if len(words(text)) < 2:
        return Cleaned("", problem="empty")
    if is_repetitive(text):
        return Cleaned("", problem="repetition")
    if any(self_references(sentence, transcript.participants, transcript) for sentence in _SENTENCES.split(text)):
        return Cleaned("", problem="self-reference")
    return Cleaned(text, citations)
