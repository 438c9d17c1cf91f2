"""Turn chat messages into the compact, numbered transcript the model reads.

Each kept message becomes one line ``[4] Bob (replying to [2]): text``. The
index is what the model cites; ``Transcript.message_id`` maps it back. Discord
markup is reduced to what a reader would see (names, ``:emoji:``, domains),
and anything that could pass for prompt structure (chat-template tokens, the
transcript delimiters) is removed, because message text is data, never
instructions.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from .conversation import Attachment, ChatMessage

MAX_MESSAGE_CHARS = 700  # one message's text; longer ones are cut with a marker
MAX_CODE_CHARS = 160  # a fenced code block keeps this much
MAX_URL_CHARS = 40  # longer URLs are shortened to their domain
MAX_NAME_CHARS = 40
ATTACHMENT_TEXT_CHARS = 1200  # the most of one text attachment the model reads

TEXT_EXTENSIONS = frozenset(
    "txt md markdown rst log csv tsv json jsonl yaml yml toml ini cfg conf xml html htm "
    "py js ts tsx jsx java kt c h cpp hpp cc cs go rs rb php swift sh bash ps1 sql lua r m scala dart "
    "css scss vue diff patch".split()
)
_KIND_BY_EXTENSION = {
    **dict.fromkeys("png jpg jpeg gif webp bmp svg heic tiff".split(), "image"),
    **dict.fromkeys("mp4 mov webm mkv avi".split(), "video"),
    **dict.fromkeys("mp3 wav ogg flac m4a opus".split(), "audio"),
    **dict.fromkeys("zip rar 7z tar gz".split(), "archive"),
    "pdf": "PDF",
}

# Delimiters around the transcript in the prompt. Messages can never contain them.
TRANSCRIPT_START = "<<<CHAT>>>"
TRANSCRIPT_END = "<<<END OF CHAT>>>"

# At most 20 digits (a snowflake): int() refuses thousands of digits.
_USER_MENTION = re.compile(r"<@!?([0-9]{1,20})>")
_ROLE_MENTION = re.compile(r"<@&([0-9]{1,20})>")
_CHANNEL_MENTION = re.compile(r"<#([0-9]{1,20})>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w{1,40}):\d+>")
_TIMESTAMP = re.compile(r"<t:(-?\d{1,13})(?::[tTdDfFR])?>")
_CODE_BLOCK = re.compile(r"\s*```(?:[\w+-]*\n)?(.*?)```", re.DOTALL)
_URL = re.compile(r"<?(https?://[^\s<>]+)>?")
# Bars that stay bars for a reader but not for NFKC, which already folds the full-width "｜" of DeepSeek's
# <｜User｜> (and "＜", "［") into ASCII: "<∣User∣>" still reads as a turn marker to a model.
BARS = "|\u00a6\u01c0\u05c0\u2223\u2502\u2503\u23b8\u23b9\u23d0\u2758\u2759\u275a"
# Chat-template control tokens (<|im_start|>, <｜end▁of▁sentence｜>, [INST], <s>) and our own delimiters,
# matched on the NFKC form of the text (see ``folded_spans``).
_CONTROL = re.compile(rf"<[{BARS}][^{BARS}>]{{0,40}}[{BARS}]>|\[/?INST\]|</?s>|<<<|>>>")
_SPACES = re.compile(r"[ \t\u00a0]+")


def remove_until_stable(pattern: re.Pattern[str], text: str) -> str:
    """Delete every match of ``pattern``, again and again until none is left.

    One pass is not enough: removing the inner marker of ``<[INST]|im_start|>`` joins the outer
    pieces into ``<|im_start|>``. Each pass shortens the text, so this ends.
    """
    while True:
        stripped = pattern.sub("", text)
        if stripped == text:
            return text
        text = stripped


def folded_spans(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    """Where ``pattern`` matches the NFKC form of ``text``, as spans of ``text`` itself.

    Only the matching is normalized, never the text: NFKC would also change what members see quoted
    in a summary ("x²" -> "x2", "ﬁ" -> "fi", full-width CJK punctuation -> ASCII). Each character is
    normalized alone, as a tokenizer reads code points: composing across characters could hide a
    marker's "<" in a "≮" (with a following U+0338).
    """
    if text.isascii() or unicodedata.is_normalized("NFKC", text):  # then folding changes no character
        return [match.span() for match in pattern.finditer(text)]
    folded: list[str] = []
    origin: list[int] = []  # for each folded character, the index of the character it came from
    for index, char in enumerate(text):
        normal = char if char.isascii() else unicodedata.normalize("NFKC", char)
        folded.append(normal)
        origin.extend([index] * len(normal))
    matches = [m for m in pattern.finditer("".join(folded)) if m.end() > m.start()]
    return [(origin[m.start()], origin[m.end() - 1] + 1) for m in matches]


def strip_control(text: str) -> str:
    """Message text without anything that could pass for prompt structure, in any spelling NFKC folds.

    Repeated until none is left: removing the inner marker of ``<[INST]|im_start|>`` joins the outer
    pieces into ``<|im_start|>``. Each pass shortens the text, so this ends.
    """
    while spans := folded_spans(_CONTROL, text):
        kept, last = [], 0
        for start, end in spans:
            kept.append(text[last:start])
            last = max(last, end)
        text = "".join(kept) + text[last:]
    return text


@dataclass(frozen=True)
class Line:
    index: int  # 1-based number the model sees and cites
    message_id: int | None
    author: str
    text: str  # the full rendered line, "[index] author: text"
    created_at: datetime | None
    position: int  # where the message sits in the list given to build_transcript
    body: str = ""  # the rendered text without index and author
    reply_index: int | None = None  # index of the answered message, when it is in the transcript


@dataclass
class Transcript:
    lines: list[Line]
    participants: list[str]  # human authors in order of first message
    start: datetime | None
    end: datetime | None

    def render(self, lines: list[Line] | None = None) -> str:
        return "\n".join(line.text for line in (self.lines if lines is None else lines))

    def message_id(self, index: int) -> int | None:
        if 1 <= index <= len(self.lines):
            return self.lines[index - 1].message_id
        return None

    def has_index(self, index: int) -> bool:
        return 1 <= index <= len(self.lines)


def clean_name(name: str) -> str:
    """A speaker name on one line, without characters that would break the line format."""
    name = strip_control(name)
    name = re.sub(r"[\r\n\t:\[\]]+", " ", name)
    name = _SPACES.sub(" ", name).strip()
    return name[:MAX_NAME_CHARS].strip() or "someone"


def shorten_url(url: str) -> str:
    if len(url) <= MAX_URL_CHARS:
        return url
    host = urlsplit(url).hostname or "link"
    return f"{host.removeprefix('www.')}…"


def _trim(text: str, limit: int, marker: str) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip() + " " + marker


def _timestamp(match: re.Match[str]) -> str:
    try:
        moment = datetime.fromtimestamp(int(match.group(1)), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "(a date)"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def clean_text(message: ChatMessage) -> str:
    """Message text as a reader would see it, on one line, markup reduced, size capped."""
    text = strip_control(message.text or "")
    text = _USER_MENTION.sub(lambda m: "@" + clean_name(message.mentions.get(int(m.group(1)), "someone")), text)
    text = _ROLE_MENTION.sub(lambda m: "@" + clean_name(message.role_mentions.get(int(m.group(1)), "a role")), text)
    text = _CHANNEL_MENTION.sub(
        lambda m: "#" + clean_name(message.channel_mentions.get(int(m.group(1)), "a channel")), text
    )
    text = _CUSTOM_EMOJI.sub(lambda m: f":{m.group(1)}:", text)
    text = _TIMESTAMP.sub(_timestamp, text)
    text = _CODE_BLOCK.sub(lambda m: " `" + _trim(" ".join(m.group(1).split()), MAX_CODE_CHARS, "[code trimmed]") + "` ", text)
    text = _URL.sub(lambda m: shorten_url(m.group(1)), text)
    text = " / ".join(part.strip() for part in text.splitlines() if part.strip())
    # Again at the end: the rewrites above can join pieces into a marker ("<|a<:x:1>|>" -> "<|a:x:|>").
    text = _SPACES.sub(" ", strip_control(text)).strip()
    return _trim(text, MAX_MESSAGE_CHARS, "[message trimmed]")


def is_text_attachment(attachment: Attachment) -> bool:
    ext = attachment.filename.rsplit(".", 1)[-1].lower() if "." in attachment.filename else ""
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    return (
        ext in TEXT_EXTENSIONS
        or content_type.startswith("text/")
        or content_type in ("application/json", "application/xml", "application/x-yaml", "application/javascript")
    )


def attachment_kind(attachment: Attachment) -> str:
    content_type = (attachment.content_type or "").lower()
    for kind in ("image", "video", "audio"):
        if content_type.startswith(kind + "/"):
            return kind
    ext = attachment.filename.rsplit(".", 1)[-1].lower() if "." in attachment.filename else ""
    return _KIND_BY_EXTENSION.get(ext, "file")


def render_attachment(attachment: Attachment) -> str:
    name = clean_name(attachment.filename)
    if attachment.text is not None and is_text_attachment(attachment):
        body = strip_control(attachment.text)
        body = strip_control(" / ".join(part.strip() for part in body.splitlines() if part.strip()))
        body = _trim(_SPACES.sub(" ", body), ATTACHMENT_TEXT_CHARS, "[file trimmed]")
        return f'[attached file {name}: "{body}"]'
    return f"[attached {attachment_kind(attachment)}: {name}]"


def build_transcript(messages: list[ChatMessage]) -> Transcript:
    """Number the human messages (oldest first), leaving out bot, system and empty ones."""
    lines: list[Line] = []
    index_by_id: dict[int, int] = {}
    participants: list[str] = []
    times: list[datetime] = []
    for position, message in enumerate(messages):
        if message.is_bot or message.is_system:
            continue
        parts = [clean_text(message)] + [render_attachment(a) for a in message.attachments]
        body = " ".join(p for p in parts if p)
        if not body:
            continue
        index = len(lines) + 1
        author = clean_name(message.author)
        target = index_by_id.get(message.reply_to) if message.reply_to is not None else None
        if message.reply_to is not None:
            head = f"[{index}] {author} (replying to {f'[{target}]' if target else 'an earlier message'})"
        else:
            head = f"[{index}] {author}"
        lines.append(Line(index, message.id, author, f"{head}: {body}", message.created_at, position, body,
                          target if message.reply_to is not None else None))
        if message.id is not None:
            index_by_id[message.id] = index
        if author not in participants:
            participants.append(author)
        if message.created_at is not None:
            times.append(message.created_at)
    return Transcript(lines, participants, min(times) if times else None, max(times) if times else None)


# ---- key messages: a faithful, model-free digest ----

_STOPWORDS = frozenset(
    """the a an and or but if to of in on at for with is are was were be been am i you he she it we they me my
    your his her our their this that these those do does did have has had not no yes so just what how why when
    where who can could will would should shall may might must there here then than too very really okay ok oh
    well hi hello hey thanks thank please sure right good great yeah lol its im don dont let about all any get
    got go going know like now one out see some think want""".split()
)
# Verbs that follow "I"/"you" often enough to be worth agreeing with a third-person subject.
_VERBS = frozenset(
    """agree ask believe bet buy call come feel find forget get give go guess hate have hear help hope know
    like live look love mean miss need plan prefer promise remember say see suggest suppose take tell think
    try understand wait want wish wonder work""".split()
)


def _third_person_verb(verb: str) -> str:
    if verb == "have":
        return "has"
    if verb in ("go", "do"):
        return verb + "es"
    if verb.endswith("y") and verb not in ("say", "buy"):
        return verb[:-1] + "ies"
    if verb.endswith(("s", "sh", "ch", "x")):
        return verb + "es"
    return verb + "s"


_SUBJECT_VERB = re.compile(r"(?:(?<=^)|(?<=[.!?,;] )|(?<=\band )|(?<=\bbut )|(?<=\bso ))(I|[Yy]ou) (\w+)\b")

# First-person and second-person forms -> third person, so a quoted message reads as reported speech.
_PERSON_SWAPS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r) for p, r in [
        (r"\bmyself\b", "themselves"), (r"\byourself\b", "themselves"),
        (r"\b(?:I'm|I am)\b", "{me} is"), (r"\b(?:I've|I have)\b", "{me} has"), (r"\b(?:I'll|I will)\b", "{me} will"),
        (r"\bI'd\b", "{me} would"), (r"\bI\b", "{me}"), (r"\b[Mm]y\b", "{me}'s"), (r"\bme\b", "{me}"),
        (r"\b(?:you're|you are|You're|You are)\b", "{you} is"), (r"\b[Yy]our\b", "{you}'s"), (r"\b[Yy]ou\b", "{you}"),
    ]
]


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z']+", text.lower()) if len(w) > 2 and w not in _STOPWORDS]


def key_message_indices(transcript: Transcript, count: int) -> list[int]:
    """The opening substantive messages (a chat usually states its purpose first), then the most
    central ones (sharing the most content words with the rest), in chat order."""
    bags = [set(content_words(line.body)) for line in transcript.lines]
    substantive = [i for i, bag in enumerate(bags) if len(bag) >= 2] or list(range(len(bags)))
    chosen = substantive[: min(2, count)]
    if count > len(chosen):
        def centrality(i: int) -> float:
            return sum(len(bags[i] & other) for j, other in enumerate(bags) if j != i) / (len(bags[i]) + 1) ** 0.5
        rest = sorted((i for i in substantive if i not in chosen), key=centrality, reverse=True)
        chosen += rest[: count - len(chosen)]
    return [transcript.lines[i].index for i in sorted(chosen)]


def addressee(transcript: Transcript, line: Line) -> str | None:
    """Who a message speaks to: the author it replies to, else the nearest other speaker."""
    if line.reply_index is not None:
        return transcript.lines[line.reply_index - 1].author
    before = transcript.lines[: line.index - 1][::-1]
    after = transcript.lines[line.index:]
    for other in before + after:
        if other.author != line.author:
            return other.author
    return None


def third_person(transcript: Transcript, line: Line) -> str:
    """The message as reported speech: "I'll fix it" by Bob -> "Bob will fix it"."""
    you = addressee(transcript, line)
    text = _SUBJECT_VERB.sub(
        lambda m: f"{m.group(1)} {_third_person_verb(m.group(2))}" if m.group(2) in _VERBS and (you or m.group(1) == "I") else m.group(0),
        line.body,
    )
    for pattern, replacement in _PERSON_SWAPS:
        if "{you}" in replacement and you is None:
            continue
        rendered = replacement.format(me=line.author, you=you or "")
        text = pattern.sub(lambda _m, r=rendered: r, text)  # a function: names are never regex templates
    if text.startswith(line.author):
        return text
    return f"{line.author}: {text}"
