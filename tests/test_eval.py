"""ROUGE scoring, lead baselines, absent names, data loading, and ``python -m bot eval`` end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from tuning.scoring import EvalDataError, RougeScorer, absent_names, lead_k, load_records, speaker_names
from fixtures.lowercase_model import lowercase_model

ROOT = Path(__file__).parents[1]

# Written for these tests; DialogSum-style tags in some, names in others.
RECORDS = [
    {
        "dialogue": "#Person1#: Did you book the train tickets for Saturday?\n#Person2#: Not yet, the website was down.\n"
                    "#Person1#: Then I'll call the station this afternoon.\n#Person2#: Thanks, get two window seats.",
        "summary": "#Person2# hasn't booked the train tickets, so #Person1# will call the station.",
    },
    {
        "dialogue": "Mara: The printer on floor two is jammed again.\nOwen: I'll ask facilities to replace the roller.\n"
                    "Mara: Please do, it jams every morning.",
        "summary1": "Mara reports the jammed printer and Owen will ask facilities to replace the roller.",
        "summary2": "Owen will get the printer roller replaced.",
    },
    {
        "dialogue": "#Person1#: What time does the pool open?\n#Person2#: At seven, but lanes are reserved until eight.\n"
                    "#Person1#: I'll come at eight then.",
        "summary": "#Person1# will come to the pool at eight because lanes are reserved until then.",
        "topic": "pool",
    },
]


@pytest.fixture(scope="session")
def words_model(tiny_causal_dir: Path) -> Path:
    return lowercase_model(tiny_causal_dir)


def write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def direct_rouge(prediction: str, references: list[str]) -> dict[str, float]:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    return {m: max(scorer.score(ref, prediction)[m].fmeasure for ref in references) for m in ("rouge1", "rouge2", "rougeL")}


def run_eval(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "MODEL", "MODEL_FILE", "DEVICE")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "bot", "--env-file", os.devnull, "eval", *args],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600)


# --- data ---------------------------------------------------------------------------------


def test_records_take_summary_or_numbered_references(tmp_path: Path) -> None:
    records = load_records(write_jsonl(tmp_path / "d.jsonl", RECORDS))
    assert [len(r.references) for r in records] == [1, 2, 1]
    assert records[1].references[1] == "Owen will get the printer roller replaced."
    assert [r.line for r in records] == [1, 2, 3]


def test_limit_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + json.dumps(RECORDS[0]) + "\n\n" + json.dumps(RECORDS[1]) + "\n", encoding="utf-8")
    records = load_records(path, limit=1)
    assert len(records) == 1 and records[0].line == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"dialogue": "a: b", "summary": "c"}\n{"dialogue": ', "d.jsonl: line 2, column 14: invalid JSON"),
        ('["a"]\n', "d.jsonl: line 1: expected a JSON object"),
        ('{"summary": "c"}\n', 'd.jsonl: line 1: "dialogue" is missing or empty'),
        ('{"dialogue": "a: b", "summary": "  "}\n', "d.jsonl: line 1: no reference summary"),
        ("\n\n", "d.jsonl: no records"),
        ("[" * 100_000 + "]" * 100_000 + "\n", "d.jsonl: line 1: invalid JSON (nested too deeply)"),
        ('{"dialogue": ' + "9" * 5000 + "}\n", "d.jsonl: line 1: invalid JSON (Exceeds the limit"),
    ],
)
def test_bad_data_is_explained(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalDataError, match=re.escape(expected)):
        load_records(path)


# --- scores -------------------------------------------------------------------------------


def test_lead_k_keeps_speaker_tags_and_skips_blank_lines() -> None:
    dialogue = "\n#Person1#: Hi.\n\n#Person2#: Hello there.\n#Person1#: Bye."
    assert lead_k(dialogue, 2) == "#Person1#: Hi.\n#Person2#: Hello there."
    assert lead_k(dialogue, 3).endswith("#Person1#: Bye.")
    assert lead_k("a: b", 3) == "a: b"


def test_rouge_takes_the_best_reference_per_metric() -> None:
    refs = ["the cat sat on the mat", "a dog ran in the park"]
    scores = RougeScorer().score("the dog sat in the park", refs)
    assert scores == pytest.approx(direct_rouge("the dog sat in the park", refs))
    assert scores["rouge1"] > RougeScorer().score("the dog sat in the park", refs[:1])["rouge1"]


def test_corpus_scores_are_mean_percentages() -> None:
    preds, refs = ["the cat sat", "nothing alike"], [["the cat sat"], ["entirely different words"]]
    assert RougeScorer().corpus(preds, refs) == {"rouge1": 50.0, "rouge2": 50.0, "rougeL": 50.0}


def test_absent_names() -> None:
    dialogue = "#Person1#: Hey Jimmy, want to go to the gym?\n#Person2#: Sure, at 3."
    speakers = speaker_names(dialogue)
    assert speakers == {"#Person1#", "#Person2#"}
    assert absent_names("#Person1# invites Jimmy to the gym.", dialogue, speakers) == []
    assert absent_names("#Person1# invites Jimmy and Karen to the gym.", dialogue, speakers) == ["Karen"]
    assert absent_names("#Person3# tells #Person1# about the gym.", dialogue, speakers) == ["#Person3#"]
    # Sentence-initial capitals, days and "I" are not taken as names.
    assert absent_names("Going to the gym. They agree on Monday, as I said.", dialogue, speakers) == []
    assert absent_names("Mara asks Owen about Owen's printer.", RECORDS[1]["dialogue"], {"Mara", "Owen"}) == []
    # A contraction is judged by the name before it; a word that is the stem of a chat word is known.
    chat = "#Person1#: Cyrus, do you like e-shopping?\n#Person2#: Yes, and the market."
    assert absent_names("Then Cyrus'll buy it from the E-Shop.", chat, speaker_names(chat)) == []
    # ...but only a plain ending makes a stem: neither a short name nor an unrelated word passes.
    assert absent_names("Then Mark and Ann go to the shop.", chat + " We announce.", speaker_names(chat)) == [
        "Mark", "Ann"]


# --- the command --------------------------------------------------------------------------


def eval_records_as_json(model: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``eval --json`` of RECORDS with ``model``; asserts it succeeded."""
    data = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    env = {"MODEL": str(model), "DEVICE": "cpu", "MODEL_CACHE_DIR": str(tmp_path / "cache"),
           "MAX_BATCH_WAIT_MS": "20", "LOG_LEVEL": "WARNING"}
    result = run_eval("--data", str(data), "--json", "--max-new-tokens", "16", env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_eval_command_json_line(words_model: Path, tmp_path: Path) -> None:
    result = eval_records_as_json(words_model, tmp_path)
    lines = result.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    assert set(out) >= {"pipeline", "lead2", "lead3", "dialogues_per_s", "n", "absent_names"}
    assert out["n"] == 3 and out["dialogues_per_s"] > 0
    assert isinstance(out["absent_names"], int) and 0 <= out["absent_names"] <= 3
    for key in ("pipeline", "lead2", "lead3"):
        assert set(out[key]) == {"rouge1", "rouge2", "rougeL"}
        assert all(0 <= v <= 100 and round(v, 2) == v for v in out[key].values())
    # The baselines against a direct rouge-score computation on the same lines.
    for k, key in ((2, "lead2"), (3, "lead3")):
        expected = {m: 0.0 for m in ("rouge1", "rouge2", "rougeL")}
        for record in RECORDS:
            refs = [record[r] for r in ("summary", "summary1", "summary2", "summary3") if r in record]
            lead = "\n".join(record["dialogue"].splitlines()[:k])
            for m, v in direct_rouge(lead, refs).items():
                expected[m] += v
        assert out[key] == {m: round(100 * v / len(RECORDS), 2) for m, v in expected.items()}
    table = "\n".join(lines[:-1])
    assert "ROUGE-1" in table and "lead-2" in table and "pipeline" in table
    assert "summaries naming someone absent from the conversation:" in table
    assert {k: out[k] for k in ("failed", "fallbacks", "names", "speakers")} == {
        "failed": 0, "fallbacks": 0, "names": False, "speakers": "names"}
    assert "the model saw people as: names" in table  # an untuned model: names
    assert isinstance(out["self_references"], int) and isinstance(out["repeated"], int)


def test_eval_counts_key_message_answers_apart_and_scores_them_as_empty(tiny_causal_dir: Path, tmp_path: Path) -> None:
    # A plain tiny random model writes capitalized gibberish: every output is unusable, twice.
    result = eval_records_as_json(tiny_causal_dir, tmp_path)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["fallbacks"] == 3 and out["failed"] == 0
    assert out["pipeline"] == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}  # the extract is not the model's
    assert "answered with the key messages (scored as empty): 3" in result.stdout


def test_names_mode_gives_each_tag_one_seeded_name_in_dialogue_and_references() -> None:
    from tuning.scoring import EvalRecord
    from tuning.data import with_names

    record = EvalRecord(7, RECORDS[0]["dialogue"], (RECORDS[0]["summary"], "#Person1# calls."))
    named = with_names(record, seed=0)
    assert "#Person" not in named.dialogue + "".join(named.references)
    first, second = (line.split(":")[0] for line in named.dialogue.splitlines()[:2])
    assert first != second and named.references[1] == f"{first} calls."
    assert f"{second} hasn't booked" in named.references[0] and f"so {first} will call" in named.references[0]
    assert with_names(record, seed=0) == named and with_names(record, seed=1) != named  # seeded
    assert with_names(EvalRecord(1, RECORDS[1]["dialogue"], ("x",)), 0).dialogue == RECORDS[1]["dialogue"]


def test_self_references_and_repeated_sentences_are_counted() -> None:
    from bot.eval_run import score

    from tuning.scoring import EvalRecord

    records = [EvalRecord(1, RECORDS[1]["dialogue"], ("Owen will get the roller replaced.",))] * 3
    predictions = ["Owen will ask Owen about the roller.",
                   "Mara reports the jam. Mara reports the jam again today.",
                   "Owen will ask facilities about the roller."]
    results = score(records, predictions)
    assert (results["self_references"], results["repeated"]) == (1, 1)


def test_eval_command_bad_data_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"dialogue": "a: b"}\n', encoding="utf-8")
    result = run_eval("--data", str(path))
    assert result.returncode == 2
    assert "error: bad.jsonl: line 1: no reference summary" in result.stderr and "Traceback" not in result.stderr
    missing = run_eval("--data", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_lone_surrogates_are_replaced_as_summarize_replaces_them(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"dialogue": "A: hi \\ud800", "summary": "A says \\udfff hi."}\n', encoding="utf-8")
    [record] = load_records(path)
    assert record.dialogue == "A: hi \ufffd" and record.references == ("A says \ufffd hi.",)


@pytest.mark.parametrize("hostile", ["[" * 100_000 + "]" * 100_000, '{"dialogue": ' + "9" * 5000 + "}"])
def test_eval_command_hostile_data_is_one_line(tmp_path: Path, hostile: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(hostile + "\n", encoding="utf-8")
    result = run_eval("--data", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: bad.jsonl: line 1: invalid JSON (") and result.stderr.count("\n") == 1


def test_eval_command_dialogue_that_is_not_a_transcript(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"dialogue": "just prose here", "summary": "x"}])
    result = run_eval("--data", str(path))
    assert result.returncode == 2 and "record on line 1" in result.stderr and "unknown format" in result.stderr


def test_copies_a_message() -> None:
    from tuning.scoring import copies_a_message

    dialogue = "Ann: the printer on floor two is jammed again today\nBo: I'll call facilities."
    assert copies_a_message("The printer on floor two is jammed again.", dialogue)
    assert not copies_a_message("Ann reports a jammed printer and Bo will call facilities.", dialogue)
    assert not copies_a_message("Jammed.", dialogue)
