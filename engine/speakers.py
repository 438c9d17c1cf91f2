"""How the model sees the people in a chat: by their names, or by speaker tags.

With ``tags`` the model reads each author as ``#Person1#``, ``#Person2#`` ... (in order of first message,
DialogSum's own notation) and writes those tags; the summarizer maps them back afterwards. A name then
comes out exactly as the chat shows it: a small model can no longer shorten "Amanda" to "Amy" or mix up
two similar names, since it never writes a name of a speaker at all. ``names`` (the default, and the
shipped adapter's) shows the names themselves. A tuned adapter records which one it learned.
"""

from __future__ import annotations

import re
from dataclasses import replace

from .transcript import Transcript

NAMES = "names"
TAGS = "tags"
SPEAKER_MODES = (NAMES, TAGS)

# What a model writes for a tag: "#Person2#", and the loose forms "Person2" / "#Person2".
TAG_IN_OUTPUT = re.compile(r"#?\bPerson(\d{1,3})\b#?")


def check_speakers(value: str) -> str:
    """``value`` if it is a known mode, else ``ValueError`` naming the allowed ones."""
    if value not in SPEAKER_MODES:
        raise ValueError(f"unknown speaker mode {value!r} (allowed: {', '.join(SPEAKER_MODES)})")
    return value


def tag(number: int) -> str:
    return f"#Person{number}#"


def tag_transcript(transcript: Transcript) -> tuple[Transcript, dict[str, str]]:
    """The same transcript with every author shown as a tag, and the map from each tag back to the name.

    Numbers, message ids, times and message bodies stay as they are, so citations and every check work
    on it unchanged; only the speaker before each line (and the participants line) differs."""
    tags = {name: tag(number) for number, name in enumerate(transcript.participants, 1)}
    lines = []
    for line in transcript.lines:
        head = f"[{line.index}] {line.author}"
        rest = line.text[len(head):] if line.text.startswith(head) else f": {line.body}"
        lines.append(replace(line, author=tags[line.author], text=f"[{line.index}] {tags[line.author]}{rest}"))
    tagged = Transcript(lines, [tags[name] for name in transcript.participants], transcript.start, transcript.end)
    return tagged, {t: name for name, t in tags.items()}


def untag(text: str, names: dict[str, str]) -> str:
    """``text`` with each tag the model wrote replaced by the name it stands for; a tag of nobody in the
    chat is left as written (the absent-name check has already judged the output)."""
    return TAG_IN_OUTPUT.sub(lambda m: names.get(tag(int(m.group(1))), m.group(0)), text)


def tag_names(text: str, names: dict[str, str]) -> str:
    """The inverse of ``untag`` for training data: each tag's name, as a whole word, replaced by its tag
    (``names``: tag -> name, as ``tag_transcript`` returns it). Longer names first, so "Ann Lee" wins over "Ann"."""
    by_name = {name: t for t, name in names.items()}
    if not by_name:
        return text
    pattern = re.compile("|".join(rf"(?<!\w){re.escape(name)}(?!\w)" for name in sorted(by_name, key=len, reverse=True)))
    return pattern.sub(lambda m: by_name[m.group(0)], text)
