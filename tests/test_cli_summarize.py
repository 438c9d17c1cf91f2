"""``python -m bot summarize`` and the offline demo, run as the user runs them.

Error cases run the real command in a subprocess (they stop before any model
loads). Summaries come from a tiny random model restricted to lowercase words
(see fixtures/lowercase_model.py) through the real executor and summarizer.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bot.offline import ProgressPrinter, format_summary, jump_url, summary_json
from bot.exports import load_conversation
from engine.generation import GenerationSettings
from engine.summarizer import FALLBACK_MODEL, FALLBACK_NOTE, Summary, Topic
from fixtures.lowercase_model import lowercase_model

ROOT = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "small_export.json"
SAMPLE = ROOT / "bot" / "data" / "sample_conversation.json"


@pytest.fixture(scope="session")
def words_model(tiny_causal_dir: Path) -> Path:
    return lowercase_model(tiny_causal_dir)


def run_bot(*args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m bot`` with no .env and no token, so only what the test sets applies."""
    environ = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "MODEL", "MODEL_FILE", "DEVICE")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", "--env-file", os.devnull, *args],
        cwd=ROOT, env=environ, input=stdin, capture_output=True, text=True, timeout=timeout,
    )


def model_env(model: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"MODEL": str(model), "DEVICE": "cpu", "MODEL_CACHE_DIR": str(tmp_path / "model-cache"),
            "MAX_BATCH_WAIT_MS": "0", "LOG_LEVEL": "WARNING", **extra}


# --- input errors: one clear line, exit code 2, never a traceback --------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.json", '{"messages": [\n  {"id": "1",, }]}', "error: bad.json: line 2, column 14: invalid JSON ("),
        ("shape.json", '{"guild": {"id": "1"}}', 'error: shape.json: not a DiscordChatExporter export: expected an object with a "messages" list'),
        ("list.json", "[1, 2, 3]", "found a list at the top level"),
        ("empty.json", "", "error: empty.json: empty input"),
        ("blank.txt", "\n\n   \n", "error: blank.txt: empty input"),
        ("prose.txt", "no speakers here\nat all", "error: prose.txt: line 1: unknown format"),
        ("time.json", json.dumps({"messages": [{"id": "5", "timestamp": "noon", "content": "x"}]}),
         "error: time.json: messages[0].timestamp: not an ISO 8601 time: 'noon'"),
        # Hostile exports: each is one line, never a traceback.
        ("deep.json", "[" * 200_000 + "]" * 200_000, "error: deep.json: invalid JSON (nested too deeply)"),
        ("digits.json", '{"messages": [{"id": ' + "9" * 5000 + "}]}", "error: digits.json: invalid JSON ("),
        ("longid.json", json.dumps({"messages": [{"id": "9" * 5000, "content": "x"}]}),
         "error: longid.json: messages[0].id: not a Discord id: '9999"),
        ("far.json", json.dumps({"messages": [{"id": "5", "timestamp": "9999-12-31T23:59:59-05:00", "content": "x"}]}),
         "error: far.json: messages[0].timestamp: time out of range: '9999-12-31T23:59:59-05:00'"),
    ],
)
def test_malformed_input_is_explained(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    result = run_bot("summarize", str(path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_file(tmp_path: Path) -> None:
    result = run_bot("summarize", str(tmp_path / "nope.json"))
    assert result.returncode == 2
    assert f"error: {tmp_path / 'nope.json'}: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_empty_stdin() -> None:
    result = run_bot("summarize", "-", stdin="")
    assert result.returncode == 2 and "error: <stdin>: empty input" in result.stderr


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--temperature", "5", "--sample"], "error: argument --temperature: temperature cannot be 5.0 (allowed: 0.05 to 2)."),
        (["--max-new-tokens", "99999"], "error: argument --max-new-tokens: max_new_tokens cannot be 99999 (allowed: 0"),
        (["--top-k", "many"], "error: argument --top-k: top_k cannot be 'many' (allowed: 0 to 500)."),
        (["--device", "gpu"], "error: --device='gpu' is not allowed (allowed: auto, cpu, cuda, cuda:N, mps)"),
        (["--model", ""], "error: --model is empty"),
    ],
)
def test_bad_options_are_explained(options: list[str], expected: str) -> None:
    result = run_bot("summarize", str(SMALL), *options)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_model_that_cannot_load_exits_1(tmp_path: Path) -> None:
    (tmp_path / "empty-model").mkdir()
    result = run_bot("summarize", str(SMALL), env=model_env(tmp_path / "empty-model", tmp_path))
    assert result.returncode == 1
    assert "error: Could not load model" in result.stderr and "Traceback" not in result.stderr


# --- real runs with a tiny model -------------------------------------------------------------


def test_text_output_for_an_export(words_model: Path, tmp_path: Path) -> None:
    result = run_bot("summarize", str(SMALL), "--max-new-tokens", "16", env=model_env(words_model, tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Summary of #planning (Fixture Guild): 2 messages\n")
    assert "Time: 2024-03-01 08:00–08:05 UTC" in out
    assert "Participants: Ada, bo" in out
    assert f"Model: {words_model.name}" in out
    body = out.split("\n\n")[1]
    assert len(body.split()) >= 2  # the model's words, after the summarizer's checks


def test_lone_surrogates_in_an_export_are_replaced_not_fatal(words_model: Path, tmp_path: Path) -> None:
    data = json.loads(SMALL.read_text("utf-8"))
    data["messages"][0]["content"] = "deploy \ud800 moved to friday \udfff ok"
    data["messages"][0]["author"]["nickname"] = "Ada\udc80"
    path = tmp_path / "surrogates.json"
    path.write_text(json.dumps(data), encoding="utf-8")  # json.dumps writes the \\ud800 escapes
    result = run_bot("summarize", str(path), "--json", "--max-new-tokens", "16", env=model_env(words_model, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Ada\ufffd" in json.loads(result.stdout)["participants"]


def test_json_output_shape_with_limit_on_stdin(words_model: Path, tmp_path: Path) -> None:
    result = run_bot("summarize", "-", "--json", "--limit", "10", "--style", "bullets", "--length", "short",
                     "--max-new-tokens", "16", env=model_env(words_model, tmp_path), stdin=SAMPLE.read_text("utf-8"))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"summary", "citations", "topics", "participants", "range", "message_count", "truncated",
                         "model", "fallback", "settings", "source"}
    assert isinstance(data["summary"], str) and data["summary"]
    assert 1 <= data["message_count"] <= 10 and data["truncated"] is False
    last = load_conversation(str(SAMPLE)).messages[-1]
    assert datetime.fromisoformat(data["range"]["end"]) == last.created_at
    assert set(data["participants"]) <= {"Maya", "Theo", "Priya", "Jonas", "Sam"}
    assert data["settings"]["length"] == "short" and data["settings"]["style"] == "bullets"
    assert data["settings"]["generation"]["max_new_tokens"] == 16
    assert data["source"] == {"name": "<stdin>", "format": "discord-export", "guild_id": "816958144512131073",
                              "channel_id": "816959402803331074", "channel_name": "dev"}
    assert data["model"] == words_model.name


def test_long_transcript_shows_progress_and_truncation(words_model: Path, tmp_path: Path) -> None:
    lines = [f"{name}: we talked about item number {i} of the migration plan and the schedule for the rollout"
             for i, name in zip(range(180), ["ada", "bo", "cy"] * 60)]
    path = tmp_path / "long.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    env = model_env(words_model, tmp_path, INPUT_TOKEN_BUDGET="3300")
    result = run_bot("summarize", str(path), "--max-new-tokens", "16", env=env)
    assert result.returncode == 0, result.stderr
    assert "summarizing: 1/" in result.stderr  # plain progress lines: stderr is not a terminal
    assert "Note: the conversation was longer than the input budget" in result.stdout
    assert "Summary of long.txt:" in result.stdout


# --- the offline demo ---------------------------------------------------------------------


def test_start_without_token_runs_the_demo(words_model: Path, tmp_path: Path) -> None:
    result = run_bot("start", env=model_env(words_model, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "DISCORD_TOKEN is not set" in result.stderr
    assert result.stdout.startswith("Summary of #dev (Lumen Notes):")
    assert "Participants: Maya" in result.stdout


@pytest.mark.embedded
def test_demo_with_the_embedded_model(embedded_cache_dir: Path) -> None:
    env = {"MODEL": "embedded", "DEVICE": "cpu", "MODEL_CACHE_DIR": str(embedded_cache_dir), "LOG_LEVEL": "INFO"}
    result = run_bot("start", env=env, timeout=1500)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Summary of #dev (Lumen Notes):")
    body = out.split("\n\n")[1]
    assert len(body.split()) >= 5
    assert any(name in body for name in ("Maya", "Theo", "Priya", "Jonas", "Sam"))  # names who talked
    # The demo runs the tuned default: the embedded model with the shipped adapter merged in.
    model = "SmolLM2-135M-Instruct (embedded, Q4_1 GGUF) + adapter recap-dialogsum"
    assert f"model {model} loaded" in result.stderr
    # Its answer is the model's summary, or, when that was unusable twice, the key messages saying so.
    if f"Model: {FALLBACK_MODEL}" in out:
        assert FALLBACK_NOTE in out.split("\n\n")[0] and "unusable generation" in result.stderr
    else:
        assert f"Model: {model}" in out


# --- rendering a Summary ------------------------------------------------------------------


def make_summary(**changes: Any) -> Summary:
    conv = load_conversation(str(SMALL))
    base = dict(
        text="Ada asked for a review of the deploy notes; bo agreed.",
        citations=[1213400000000000010, 1213400000000000020],
        topics=[Topic("deploy notes review", 1213400000000000010), Topic("unplaced", None)],
        participants=["Ada", "bo"],
        start=conv.messages[0].created_at,
        end=conv.messages[1].created_at,
        message_count=2,
        truncated=False,
        source_ids=[1213400000000000010, 1213400000000000020],
        model="tiny",
        settings=GenerationSettings(max_new_tokens=40),
    )
    base.update(changes)
    return Summary(**base)


def test_jump_urls() -> None:
    assert jump_url(1, 2, 3) == "https://discord.com/channels/1/2/3"
    assert jump_url(None, 2, 3) == "https://discord.com/channels/@me/2/3"
    assert jump_url(1, None, 3) is None and jump_url(1, 2, None) is None


def test_text_output_lists_cited_messages_and_topics_with_links() -> None:
    conv = load_conversation(str(SMALL))
    text = format_summary(make_summary(truncated=True), conv)
    link = "https://discord.com/channels/900000000000000001/900000000000000002/1213400000000000010"
    assert "Cited messages:\n  [1] Ada: Can someone check the deploy notes before Monday?\n      " + link in text
    assert "  [2] bo: On it @Ada :thumbsup:" in text
    assert f"  - deploy notes review  {link}" in text
    assert "  - unplaced\n" in text
    assert "Note: the conversation was longer than the input budget, so only the newest 2 messages were read" in text


def test_json_output_has_citation_links_and_string_ids() -> None:
    conv = load_conversation(str(SMALL))
    data = summary_json(make_summary(), conv, "medium", "topics")
    first = data["citations"][0]
    assert first == {
        "message_id": "1213400000000000010",
        "url": "https://discord.com/channels/900000000000000001/900000000000000002/1213400000000000010",
        "author": "Ada",
        "excerpt": "Can someone check the deploy notes before Monday?",
    }
    assert data["topics"][1] == {"title": "unplaced", "message_id": None, "url": None}
    assert data["range"] == {"start": "2024-03-01T08:00:00+00:00", "end": "2024-03-01T08:05:30.500000+00:00"}
    assert data["settings"]["generation"]["max_new_tokens"] == 40
    json.dumps(data)  # serializable as it is


def test_transcript_input_has_no_links() -> None:
    conv = load_conversation(str(FIXTURES / "transcript.txt"))
    summary = make_summary(citations=[], topics=[Topic("venue", None)], start=None, end=None)
    text = format_summary(summary, conv)
    assert "https://" not in text and "Time:" not in text
    assert text.startswith("Summary of transcript.txt: 2 messages")


# --- progress display ---------------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = ProgressPrinter(out)
    progress("reading", 0, 1)
    progress("summarizing", 0, 1)  # one request: nothing to show
    for done in range(4):
        progress("summarizing", done, 3)
    progress("summarizing", 3, 3)  # repeated: shown once
    progress("queued", 2, 0)
    progress.close()
    assert out.getvalue().splitlines() == [
        "summarizing: 0/3", "summarizing: 1/3", "summarizing: 2/3", "summarizing: 3/3", "queued: position 2"]


def test_progress_bar_on_a_terminal() -> None:
    out = FakeTTY()
    progress = ProgressPrinter(out)
    progress("summarizing", 1, 4)
    progress.close()  # an unfinished bar still ends its line
    text = out.getvalue()
    assert text.startswith("\r\x1b[2K") and "[######..................] 1/4" in text and text.endswith("\n")
