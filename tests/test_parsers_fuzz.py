"""Seeded fuzzing of the export and transcript parsers, and of the JSON Lines data that ``eval`` and
``finetune`` read: hostile input gives ExportError (one line), never a traceback.

Each case is parsed as the CLI parses a file (``parse_text``), and whatever parses is rendered into the
model's transcript (``build_transcript``), the next parser on that path. The seed is fixed, so a failure
reproduces; it prints the case that broke.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

from bot.exports import ExportError, parse_text
from engine.transcript import build_transcript

SEED = 20240612
CASES = 12_000

NASTY_TEXT = [
    "", " ", "\ud800", "a\udfffb", "\x00", "²³", "١٢٣", "9" * 5000, "-1", "1e400", "NaN", "../../.env", "/etc/passwd",
    "file:///etc/passwd", "file://host/x.txt", "http://[", "%2e%2e/%2e%2e/x.txt", "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00+05:00", "2024-03-01T09:00:00", "noon", "<|im_start|>", "<[INST]|im_end|>", "<<<CHAT>>>",
    "<@123>", "<#1>", "<@" + "7" * 5000 + ">", "<#" + "1" * 4400 + ">", "<@&٣>", "<t:99999999999999>", "<t:-62135596800>", "```py\ncode", "Name: text", "#Person1#: hi",
    "x" * 3000, "\n\n", "a:b", "\u202e", "https://e.example/x", "[a](https://e.example)", "notes.txt", ".env",
]


def nasty_scalar(rng: random.Random) -> Any:
    pick = rng.randrange(9)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 1, 2**63, 2**64, 2**64 + 1, 10**30, rng.randrange(10**19)])
    if pick == 3:
        return rng.choice([0.5, -0.0, 1e308, float("inf"), float("nan")])
    if pick in (4, 5):
        return rng.choice(NASTY_TEXT)
    if pick == 6:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if pick == 7:
        return [nasty_scalar(rng) for _ in range(rng.randrange(3))]
    return {rng.choice(["id", "name", "url", "x"]): nasty_scalar(rng) for _ in range(rng.randrange(3))}


def valid_message(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "id": str(1213400000000000000 + n),
        "type": rng.choice(["Default", "Reply", "GuildMemberJoin", "ThreadCreated", 19, "Call"]),
        "timestamp": f"2024-03-01T09:{n % 60:02d}:00+02:00",
        "timestampEdited": None,
        "content": rng.choice(NASTY_TEXT[20:] + ["hello there", "ok"]),
        "author": {"id": "700000000000000001", "name": rng.choice(["ada", "bo", "<|im_start|>x"]), "nickname": None,
                   "isBot": rng.random() < 0.1},
        "attachments": [{"id": "3", "url": rng.choice(NASTY_TEXT[8:14] + ["notes.txt", "sub/notes.txt"]),
                         "fileName": rng.choice(["notes.txt", "a.png", ".env"]), "fileSizeBytes": 12}],
        "embeds": [{"title": "t", "description": rng.choice(NASTY_TEXT)}],
        "stickers": [{"name": "s"}],
        "mentions": [{"id": "700000000000000001", "name": "ada", "nickname": "Ada"}],
        "reference": {"messageId": str(1213400000000000000 + max(0, n - 1))},
    }


def mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """Replace one field somewhere inside ``value`` (dicts and lists) with a nasty value."""
    if isinstance(value, dict) and value and depth < 6:
        key = rng.choice(list(value))
        if rng.random() < 0.5:
            value[key] = mutate(rng, value[key], depth + 1)
        elif rng.random() < 0.5:
            value[key] = nasty_scalar(rng)
        else:
            del value[key]
        return value
    if isinstance(value, list) and value and depth < 6:
        i = rng.randrange(len(value))
        value[i] = mutate(rng, value[i], depth + 1) if rng.random() < 0.7 else nasty_scalar(rng)
        return value
    return nasty_scalar(rng)


def export_case(rng: random.Random) -> str:
    data: Any = {"guild": {"id": "1", "name": "g"}, "channel": {"id": "2", "name": "c"},
                 "messages": [valid_message(rng, n) for n in range(rng.randrange(1, 5))]}
    for _ in range(rng.randrange(1, 4)):
        data = mutate(rng, data)
    return json.dumps(data, allow_nan=True)


def text_edit_case(rng: random.Random) -> str:
    """Character-level damage to a valid export: cuts, inserted brackets and quotes, deep nesting."""
    text = export_case(rng)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(text) + 1)
        edit = rng.randrange(4)
        if edit == 0:
            text = text[:at] + text[at + rng.randrange(1, 8):]
        elif edit == 1:
            text = text[:at] + rng.choice(['"', "{", "[", "]", "}", ",", ":", "\\u", "\\ud800", "1" * 30]) + text[at:]
        elif edit == 2:
            depth = rng.choice([10, 1000, 50_000])
            text = text[:at] + "[" * depth + "]" * depth + text[at:]
        else:
            text = text[:at] + json.dumps(rng.choice(NASTY_TEXT)) + text[at:]
    return text


def transcript_case(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randrange(1, 6)):
        name = rng.choice(["Ada", "#Person1#", "a b c d e f g", "", "<|im_start|>", "12:30", "\ud800", "x" * 70])
        sep = rng.choice([": ", ":", " : ", ":\t", ""])
        lines.append(name + sep + rng.choice(NASTY_TEXT))
    return rng.choice(["\n", "\r\n", "\n\n"]).join(lines)


GENERATORS: list[Callable[[random.Random], str]] = [export_case, text_edit_case, transcript_case]


def test_fuzzed_exports_and_transcripts_never_raise_anything_but_export_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("local notes", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_bytes(b"\xff\xfe binary")
    rng = random.Random(SEED)
    parsed = refused = 0
    for number in range(CASES):
        case = GENERATORS[number % len(GENERATORS)](rng)
        try:
            conversation = parse_text(case, "fuzz", base_dir=tmp_path, attachment_max_bytes=64)
        except ExportError as exc:
            assert str(exc).startswith("fuzz: ") and "\n" not in str(exc)  # one line naming the source
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"case {number} raised {type(exc).__name__}: {exc!r}\n{case[:2000]!r}") from exc
        try:
            build_transcript(conversation.messages).render().encode("utf-8")  # encodable: no lone surrogates
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"case {number}: transcript failed: {exc!r}\n{case[:2000]!r}") from exc
        parsed += 1
    assert parsed > CASES // 10 and refused > CASES // 10  # both paths were exercised


# ---- the JSON Lines loaders of `eval` and `finetune` ----

RECORD_CASES = 3_000
HOSTILE_LINES = [
    "[" * 100_000 + "]" * 100_000,  # deep nesting: RecursionError inside json
    '{"dialogue": ' + "[" * 50_000 + "]" * 50_000 + ', "summary": "x"}',
    '{"dialogue": ' + "9" * 5000 + ', "summary": "x"}',  # int string conversion limit
    '{"dialogue": "A: hi", "summary": 1e99999}', '{"dialogue": -Infinity, "summary": NaN}',
    '{"dialogue": "A: hi \\ud800", "summary": "lone \\udfff surrogate"}', '{"dialogue": "\\ud800: x", "summary": "y"}',
    '"just a string"', "[]", "null", "{}", '{"dialogue": {"a": 1}, "summary": ["x"]}', "\ufeff{}", "\x00",
]


def record_line(rng: random.Random) -> str:
    """One JSON Lines record: valid, mutated, character-damaged, or a known hostile line."""
    pick = rng.randrange(5)
    if pick == 0:
        return rng.choice(HOSTILE_LINES)
    summary = rng.choice(["Ada asks Bo about the \ud800 release. Bo agrees.", *NASTY_TEXT])
    record: Any = {"dialogue": transcript_case(rng), rng.choice(["summary", "summary1", "summary3", "x"]): summary}
    if pick == 1:
        record = mutate(rng, record)
    line = json.dumps(record, allow_nan=True)
    if pick == 2:
        at = rng.randrange(len(line) + 1)
        line = line[:at] + rng.choice(['"', "{", "]", "\\ud800", "1" * 5000, "[" * 5000]) + line[at:]
    return line


def jsonl_case(rng: random.Random) -> bytes:
    if rng.random() < 0.1:  # binary garbage, sometimes behind a valid-looking start
        return rng.choice([b"", b'{"dialogue": ']) + rng.randbytes(rng.randrange(1, 200))
    lines = [record_line(rng) for _ in range(rng.randrange(1, 3))]
    return "\n".join(lines).encode("utf-8")


def test_fuzzed_eval_and_finetune_data_give_one_line_errors(tmp_path: Path) -> None:
    from tuning.scoring import load_records
    from bot.exports import parse_transcript
    from tuning.data import build_examples

    path = tmp_path / "data.jsonl"
    rng = random.Random(SEED)
    loaded = refused = 0
    for number in range(RECORD_CASES):
        case = jsonl_case(rng)
        path.write_bytes(case)
        try:
            records = load_records(path)
            for record in records:  # what `eval` checks before the model loads
                parse_transcript(record.dialogue, f"{path.name}: record on line {record.line}")
            examples = build_examples(records, seed=number)  # what `finetune` builds before the model loads
        except ExportError as exc:  # EvalDataError and FinetuneDataError are ExportErrors
            assert "\n" not in str(exc) and str(exc).strip(), f"case {number}: {exc!r}"
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"case {number} raised {type(exc).__name__}: {exc!r}\n{case[:2000]!r}") from exc
        for example in examples:  # encodable: no lone surrogates reach a tokenizer
            (example.prompt_user + example.answer).encode("utf-8")
        loaded += 1
    assert loaded > RECORD_CASES // 20 and refused > RECORD_CASES // 10  # both paths were exercised
