"""Fine-tuning: training data built by the serving code, LoRA training through peft on tiny models,
exact resume, adapters merged at load, and ``python -m bot finetune`` end to end."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tuning.scoring import EvalRecord
from bot.exports import parse_transcript
from tuning.trainer import IGNORE, FinetuneError, Interrupted, TrainConfig, Trainer, epoch_batches, tokenize, schedule_factor
from tuning.data import (CHANNEL_EVERY, build_examples, channel_examples, cite, examples_for, fit_merge, length_for,
                                name_map, sentences)
from engine.generation import GenerationSettings, Prompt
from engine.adapters import ADAPTER_META, EMBEDDED_ADAPTER_DIR, resolve_adapter
from engine.models import ModelLoadError, load_backend
from engine.prompts import COMPACT, PROMPT_FORMATS, RULES, combine_prompt, notes_prompt, summary_prompt, target_words
from engine.summarizer import Summarizer
from engine.speakers import NAMES, TAGS
from engine.transcript import build_transcript
from fixtures.lowercase_model import lowercase_model
from test_summarizer import Recording

ROOT = Path(__file__).parents[1]

# Written for these tests, in DialogSum's shape.
RECORDS = [
    {"dialogue": "#Person1#: Did you book the train tickets for Saturday?\n#Person2#: Not yet, the website was down.\n"
                 "#Person1#: Then I'll call the station this afternoon.\n#Person2#: Thanks, get two window seats.",
     "summary": "#Person2# hasn't booked the train tickets because the website was down. #Person1# will call the station."},
    {"dialogue": "#Person1#: The printer on floor two is jammed again.\n#Person2#: I'll ask facilities to replace the roller.\n"
                 "#Person1#: Please do, it jams every morning.",
     "summary": "#Person1# reports the jammed printer and #Person2# will ask facilities to replace the roller."},
    {"dialogue": "#Person1#: What time does the pool open?\n#Person2#: At seven, but lanes are reserved until eight.\n"
                 "#Person1#: I'll come at eight then.",
     "summary": "#Person1# will come to the pool at eight because lanes are reserved until then."},
    {"dialogue": "#Person1#: Mr. Lee asked for the budget by Friday.\n#Person2#: I can draft it tomorrow morning.\n"
                 "#Person1#: Great, send it to me first.\n#Person2#: Will do.",
     "summary": "#Person2# will draft the budget Mr. Lee asked for and send it to #Person1# first."},
]


def records(n: int = len(RECORDS)) -> list[EvalRecord]:
    return [EvalRecord(i + 1, r["dialogue"], (r["summary"],)) for i, r in enumerate(RECORDS[:n])]


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def words_model(tiny_causal_dir: Path) -> Path:
    return lowercase_model(tiny_causal_dir)


def fast_config(**kw) -> TrainConfig:  # noqa: ANN003
    base = dict(rank=4, lr=5e-3, batch_size=2, seed=1, max_steps=4, checkpoint_every=2, max_tokens=2048)
    base.update(kw)
    return TrainConfig(**base)


# --- data ----------------------------------------------------------------------------------


def test_names_replace_tags_consistently_and_vary_with_the_record() -> None:
    first = examples_for(records(1)[0], seed=3)[0]
    assert "#Person" not in first.prompt_user and "#Person" not in first.answer
    names = name_map(RECORDS[0]["dialogue"], RECORDS[0]["summary"], random.Random("3:1"))
    assert set(names) == {"#Person1#", "#Person2#"} and len(set(names.values())) == 2
    # The same person has the same name in the chat and in the summary.
    assert first.answer.startswith(names["#Person2#"]) and f"] {names['#Person1#']}: Did you book" in first.prompt_user
    assert examples_for(records(1)[0], seed=3) == examples_for(records(1)[0], seed=3)  # seeded
    chosen = {tuple(sorted(name_map(RECORDS[0]["dialogue"], "", random.Random(f"{s}:1")).values())) for s in range(20)}
    assert len(chosen) > 10  # varied across seeds (and records)


@pytest.mark.parametrize("prompt_format", PROMPT_FORMATS)
def test_training_prompt_is_the_serving_prompt(prompt_format: str) -> None:
    example = examples_for(records(2)[1], seed=0, prompt_format=prompt_format)[0]
    dialogue = example.prompt_user.split("<<<CHAT>>>\n", 1)[1].split("\n<<<END OF CHAT>>>", 1)[0]
    # Rebuild what the summarizer sends for the same chat (names as the chat shows them).
    lines = [line.split("] ", 1)[1] for line in dialogue.splitlines()]
    transcript = build_transcript(parse_transcript("\n".join(lines)).messages)
    served = summary_prompt(transcript.render(), transcript.participants, example.length, "paragraph", len(transcript.lines),
                            prompt_format)
    assert (example.prompt_system, example.prompt_user) == (served.system, served.user)


def test_answers_cite_messages_and_keep_titles_in_one_sentence() -> None:
    assert sentences("Mr. Lee asked. Dr. Ng agrees! Then Ann left.") == ["Mr. Lee asked.", "Dr. Ng agrees!", "Then Ann left."]
    example = examples_for(records(4)[3], seed=0)[0]
    assert example.answer.endswith("first [3].") or "[" in example.answer  # cited by shared content words
    transcript = build_transcript(parse_transcript("Ann: the printer jammed on floor two\nBo: ok").messages)
    assert cite(["The printer on floor two jammed.", "Nobody spoke of lunch."], transcript.lines) == [
        "The printer on floor two jammed [1].", "Nobody spoke of lunch."]


def test_length_preset_holds_the_reference_and_bullets_come_from_its_sentences() -> None:
    assert length_for("one two three", 4) == "short"
    assert length_for(" ".join(["word"] * 60), 30) == "medium"
    many = [EvalRecord(i, RECORDS[0]["dialogue"], (RECORDS[0]["summary"],)) for i in range(1, 200)]
    built = build_examples(many, seed=0)
    kinds = {e.kind for e in built}
    assert kinds == {"paragraph", "bullets", "notes", "channel-notes", "channel-combine"}
    assert sum(e.kind == "channel-combine" for e in built) == len(many) // CHANNEL_EVERY
    for e in built:
        if e.kind == "bullets":
            assert e.answer.count("\n- ") == 1 and e.answer.startswith("- ")
            assert "bullet list" in e.prompt_user


def test_fit_merge_keeps_every_part_in_order_within_the_words() -> None:
    parts = [["a b c.", "d e."], ["f g.", "h i j k."], ["l."]]
    assert fit_merge(parts, 6) == ["a b c.", "f g.", "l."]  # each part's first sentence before any second one
    assert fit_merge(parts, 8) == ["a b c.", "d e.", "f g.", "l."]
    assert fit_merge(parts, 100) == ["a b c.", "d e.", "f g.", "h i j k.", "l."]
    assert fit_merge(parts, 1) == ["a b c."]  # never empty


@pytest.mark.parametrize("prompt_format", PROMPT_FORMATS)
def test_a_synthetic_channel_teaches_the_map_and_combine_stages_as_served(prompt_format: str) -> None:
    group = records(3)
    notes_ex, combine_ex = channel_examples(group, seed=0, prompt_format=prompt_format)
    assert (notes_ex.kind, combine_ex.kind) == ("channel-notes", "channel-combine")
    # One conversation numbered throughout: the three dialogues' 4 + 3 + 3 messages are [1]..[10].
    numbers = [int(n) for n in re.findall(r"^\[(\d+)\]", combine_ex.prompt_user, re.M)]
    assert numbers == []  # the combine stage sees notes, not messages
    notes = re.findall(r"^Part \d+: (.*)$", combine_ex.prompt_user, re.M)
    assert len(notes) == 3
    people = re.search(r"People in this conversation: (.*)\.", combine_ex.prompt_user).group(1).split(", ")
    assert len(people) <= 6  # one small cast: people recur across the channel's dialogues
    length = combine_ex.length
    served = combine_prompt(notes, people, length, "bullets" if combine_ex.answer.startswith("- ") else "paragraph",
                            10, final=True, prompt_format=prompt_format)
    assert (combine_ex.prompt_system, combine_ex.prompt_user) == (served.system, served.user)
    # Part 2's note cites part 2's messages by the channel's numbers ([5]..[7]); the printer note is part 2's.
    printer = next(n for n in notes if "printer" in n)
    assert re.findall(r"\[(\d+)\]", printer) and all(5 <= int(x) <= 7 for x in re.findall(r"\[(\d+)\]", printer))
    # The target is the notes' own sentences, in order, within the length's words (or the first one alone).
    answer = [line.removeprefix("- ") for line in combine_ex.answer.splitlines()] if combine_ex.answer.startswith("- ") \
        else sentences(combine_ex.answer)
    pool = [x for note in notes for x in sentences(note)]
    assert answer and all(x in pool for x in answer)
    assert [pool.index(x) for x in answer] == sorted(pool.index(x) for x in answer)
    assert len(answer) == 1 or sum(len(x.split()) for x in answer) <= target_words(length, 10)
    # The notes example is one part of that channel, with the whole channel's people, as _map sends it.
    chat = notes_ex.prompt_user.split("<<<CHAT>>>\n", 1)[1].split("\n<<<END OF CHAT>>>", 1)[0]
    first = int(re.match(r"\[(\d+)\]", chat).group(1))
    assert first in (1, 5, 8) and notes_ex.answer in notes
    expected = notes_prompt(chat, people, prompt_format)
    assert (notes_ex.prompt_system, notes_ex.prompt_user) == (expected.system, expected.user)
    assert channel_examples(group, seed=0, prompt_format=prompt_format) == [notes_ex, combine_ex]  # seeded


# --- tokenizing and batching -----------------------------------------------------------------


def test_tokens_are_what_generation_feeds_and_loss_covers_only_the_answer(tiny_causal_dir: Path) -> None:
    backend = load_backend(str(tiny_causal_dir), device="cpu")
    texts = build_examples(records(2), seed=0)
    examples, skipped = tokenize(backend, texts, 4096)
    assert skipped == 0 and len(examples) == len(texts)
    ex, text = examples[0], texts[0]
    rendered = backend.render(Prompt(text.prompt_system, text.prompt_user))
    prompt_ids = backend.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert ex.ids[: len(prompt_ids)] == prompt_ids
    assert ex.labels[: len(prompt_ids)] == [IGNORE] * len(prompt_ids)
    answer = [t for t in ex.labels if t != IGNORE]
    assert backend.tokenizer.decode(answer[:-1]) == text.answer
    assert answer[-1] == backend.model.generation_config.eos_token_id  # the model learns to stop
    _, skipped = tokenize(backend, texts, 50)
    assert skipped == len(texts)


def test_epoch_batches_are_seeded_complete_and_grouped_by_length() -> None:
    lengths = [random.Random(i).randint(10, 500) for i in range(100)]
    batches = epoch_batches(lengths, 4, seed=5, epoch=0)
    assert batches == epoch_batches(lengths, 4, seed=5, epoch=0)
    assert batches != epoch_batches(lengths, 4, seed=5, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(100))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 60  # random batches of 4 would spread ~250


# --- training ------------------------------------------------------------------------------


def _adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _trainer(model_dir: Path, out: Path, config: TrainConfig) -> Trainer:
    backend = load_backend(str(model_dir), device="cpu")
    texts = build_examples(records(), seed=0, prompt_format=config.prompt_format, speakers=config.speakers)
    examples, _ = tokenize(backend, texts, config.max_tokens)
    return Trainer(backend, examples, config, out)


def _train(model_dir: Path, out: Path, config: TrainConfig, **train_kw):  # noqa: ANN003
    trainer = _trainer(model_dir, out, config)
    return trainer, trainer.train(**train_kw)


def test_lora_training_lowers_the_loss_and_writes_an_adapter(tiny_causal_dir: Path, tmp_path: Path) -> None:
    trainer, result = _train(tiny_causal_dir, tmp_path / "a", fast_config(max_steps=12, lr=2e-2), progress_stream=open(os.devnull, "w"))
    assert result.steps == 12 and len(result.losses) == 12
    first, last = sum(l for _, l in result.losses[:3]) / 3, sum(l for _, l in result.losses[-3:]) / 3
    assert last < first
    trainer.save_adapter("tiny-test", "tiny")
    meta = json.loads((tmp_path / "a" / ADAPTER_META).read_text())
    assert meta["answer_prefix"] is False and meta["base"]["model_type"] == "llama" and meta["name"] == "tiny-test"
    assert meta["prompt_format"] == RULES  # TrainConfig's default
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("mlp" in n for n in trainable) and any("self_attn" in n for n in trainable)  # all linear layers


def test_resume_continues_exactly(tiny_causal_dir: Path, tmp_path: Path) -> None:
    quiet = open(os.devnull, "w")
    straight, whole = _train(tiny_causal_dir, tmp_path / "straight", fast_config(), progress_stream=quiet)
    straight.save_adapter("s", "tiny")

    def stop_after_two(step: int) -> None:
        if step == 2:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does: finish the step, checkpoint, stop

    with pytest.raises(Interrupted) as stopped:
        _train(tiny_causal_dir, tmp_path / "resumed", fast_config(checkpoint_every=100), progress_stream=quiet, on_step=stop_after_two)
    assert stopped.value.step == 2
    resumed, result = _train(tiny_causal_dir, tmp_path / "resumed", fast_config(checkpoint_every=100), progress_stream=quiet, resume=True)
    assert result.steps == 4
    # The model card's figures cover the whole run, the two steps before the stop included.
    assert result.examples_seen == whole.examples_seen == sum(len(straight.batch_at(i)) for i in range(4))
    assert result.train_seconds > result.seconds > 0
    resumed.save_adapter("r", "tiny")
    a, b = _adapter_tensors(tmp_path / "straight"), _adapter_tensors(tmp_path / "resumed")
    assert a.keys() == b.keys()
    assert all(bool((a[k] == b[k]).all()) for k in a)
    assert [l for _, l in resumed.losses] == [l for _, l in straight.losses]


def test_a_pilot_stops_at_its_step_and_a_resume_finishes_the_same_run(tiny_causal_dir: Path, tmp_path: Path) -> None:
    quiet = open(os.devnull, "w")
    straight, _ = _train(tiny_causal_dir, tmp_path / "straight", fast_config(), progress_stream=quiet)
    straight.save_adapter("s", "tiny")
    pilot, early = _train(tiny_causal_dir, tmp_path / "run", fast_config(checkpoint_every=100), progress_stream=quiet, stop_at=3)
    assert early.steps == 3 and pilot.total == 4  # the schedule is the whole run's
    pilot.save_adapter("pilot", "tiny")
    assert json.loads((tmp_path / "run" / ADAPTER_META).read_text())["steps"] == 3
    resumed, result = _train(tiny_causal_dir, tmp_path / "run", fast_config(checkpoint_every=100), progress_stream=quiet, resume=True)
    assert result.steps == 4
    resumed.save_adapter("r", "tiny")
    a, b = _adapter_tensors(tmp_path / "straight"), _adapter_tensors(tmp_path / "run")
    assert all(bool((a[k] == b[k]).all()) for k in a)


def test_a_resume_may_shorten_or_lengthen_the_run_and_nothing_else(tiny_causal_dir: Path, tmp_path: Path) -> None:
    quiet = open(os.devnull, "w")
    _train(tiny_causal_dir, tmp_path / "run", fast_config(max_steps=8, checkpoint_every=100), progress_stream=quiet, stop_at=3)
    with pytest.raises(FinetuneError, match="at step 3, at or past the new end"):  # ending where it already is
        _train(tiny_causal_dir, tmp_path / "run", fast_config(max_steps=3, checkpoint_every=100), resume=True)
    with pytest.raises(FinetuneError, match="other settings"):  # a length change does not excuse another change
        _train(tiny_causal_dir, tmp_path / "run", fast_config(max_steps=5, lr=1e-3, checkpoint_every=100), resume=True)
    trainer = _trainer(tiny_causal_dir, tmp_path / "run", fast_config(max_steps=5, checkpoint_every=100))
    rates: list[float] = []
    result = trainer.train(resume=True, progress_stream=quiet, on_step=lambda _: rates.append(trainer.scheduler.get_last_lr()[0]))
    assert result.steps == 5 and trainer.replanned == (8, 5, 3)
    peak = fast_config().lr
    at_stop = schedule_factor(3, 8, fast_config().warmup)  # where the 8-step schedule had the rate at step 3
    assert rates == pytest.approx([peak * at_stop * (5 - 4) / (5 - 3), 0.0])  # straight down from there to 0
    assert result.examples_seen == sum(len(trainer.batch_at(i)) for i in range(5))
    # A plain resume of the re-planned run keeps the note for the model card.
    again, _ = _train(tiny_causal_dir, tmp_path / "run", fast_config(max_steps=5, checkpoint_every=100),
                      progress_stream=quiet, resume=True)
    assert again.replanned == (8, 5, 3)


def test_lora_on_the_top_blocks_only_trains_and_serves(tiny_causal_dir: Path, tmp_path: Path) -> None:
    trainer, result = _train(tiny_causal_dir, tmp_path / "top", fast_config(max_steps=2, lora_layers=1),
                             progress_stream=open(os.devnull, "w"))
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.1." in n for n in trainable)  # the tiny model has blocks 0 and 1
    assert any("mlp" in n for n in trainable) and any("self_attn" in n for n in trainable)
    trainer.save_adapter("top", "tiny")
    assert json.loads((tmp_path / "top" / ADAPTER_META).read_text())["lora_layers"] == 1
    tuned = load_backend(str(tiny_causal_dir), device="cpu", adapter=str(tmp_path / "top"))
    assert tuned.adapter == "top"
    with pytest.raises(FinetuneError, match="other settings"):  # another layer set is another run
        _train(tiny_causal_dir, tmp_path / "top", fast_config(max_steps=2), resume=True)


def test_resume_with_other_settings_is_refused(tiny_causal_dir: Path, tmp_path: Path) -> None:
    _train(tiny_causal_dir, tmp_path / "a", fast_config(max_steps=2), progress_stream=open(os.devnull, "w"))
    with pytest.raises(FinetuneError, match="other settings"):
        _train(tiny_causal_dir, tmp_path / "a", fast_config(max_steps=2, lr=1e-3), resume=True)
    with pytest.raises(FinetuneError, match="other settings"):  # other prompts are other data
        _train(tiny_causal_dir, tmp_path / "a", fast_config(max_steps=2, prompt_format=COMPACT), resume=True)


def test_an_adapter_trained_on_speaker_tags_is_served_with_them(tiny_causal_dir: Path, tmp_path: Path) -> None:
    trainer, _ = _train(tiny_causal_dir, tmp_path / "t", fast_config(max_steps=1, speakers=TAGS), progress_stream=open(os.devnull, "w"))
    assert all("#Person1#" in ex_text.prompt_user for ex_text in build_examples(records(), seed=0, speakers=TAGS))
    trainer.save_adapter("tags", "tiny")
    assert json.loads((tmp_path / "t" / ADAPTER_META).read_text())["speakers"] == TAGS
    assert load_backend(str(tiny_causal_dir), device="cpu", adapter=str(tmp_path / "t")).speakers == TAGS
    assert load_backend(str(tiny_causal_dir), device="cpu").speakers == NAMES  # untuned: names
    with pytest.raises(FinetuneError, match="other settings"):  # other speakers are other data
        _train(tiny_causal_dir, tmp_path / "t", fast_config(max_steps=1), resume=True)


def test_seq2seq_model_trains_and_its_adapter_loads(tiny_seq2seq_dir: Path, tmp_path: Path) -> None:
    trainer, result = _train(tiny_seq2seq_dir, tmp_path / "s2s", fast_config(max_steps=2, max_tokens=4096), progress_stream=open(os.devnull, "w"))
    assert result.steps == 2
    trainer.save_adapter("s2s", "tiny-bart")
    backend = load_backend(str(tiny_seq2seq_dir), device="cpu", adapter=str(tmp_path / "s2s"))
    assert backend.adapter == "s2s" and "adapter s2s" in backend.name
    out = backend.generate_batch([Prompt("sys", "Ann: hello there")], GenerationSettings(max_new_tokens=4))
    assert len(out) == 1


# --- adapters at load ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def causal_adapter(tiny_causal_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapter") / "tiny-adapter"
    trainer, _ = _train(tiny_causal_dir, out, fast_config(max_steps=3, lr=5e-2), progress_stream=open(os.devnull, "w"))
    trainer.save_adapter("tiny-adapter", "tiny")
    return out


def test_adapter_is_merged_named_and_changes_the_weights(tiny_causal_dir: Path, causal_adapter: Path) -> None:
    import torch

    base = load_backend(str(tiny_causal_dir), device="cpu")
    tuned = load_backend(str(tiny_causal_dir), device="cpu", adapter=str(causal_adapter))
    assert tuned.adapter == "tiny-adapter" and tuned.name.endswith("+ adapter tiny-adapter")
    assert tuned.describe()["adapter"] == "tiny-adapter"
    assert tuned.answer_prefix is False and base.answer_prefix is True
    assert not any("lora" in n for n, _ in tuned.model.named_modules())  # merged: plain layers, same speed
    assert type(tuned.model) is type(base.model)
    prompt = [Prompt("Summarize.", "Ann: the printer jammed again")]
    ids = base.tokenizer(base.render(prompt[0]), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(base.model(ids).logits, tuned.model(ids).logits)


def test_wrong_or_incomplete_adapter_stops_with_one_line(tiny_seq2seq_dir: Path, causal_adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="trained for another base model") as err:
        load_backend(str(tiny_seq2seq_dir), device="cpu", adapter=str(causal_adapter))
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="adapter_model.safetensors, recap_adapter.json missing"):
        load_backend(str(tiny_seq2seq_dir), device="cpu", adapter=str(broken))
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_backend(str(tiny_seq2seq_dir), device="cpu", adapter=str(tmp_path / "nowhere"))


def _adapter_with_meta(adapter: Path, folder: Path, **changes: object) -> Path:
    """A copy of ``adapter`` whose metadata has ``changes`` (a None value removes the key)."""
    shutil.copytree(adapter, folder)
    meta = json.loads((folder / ADAPTER_META).read_text())
    meta.update(changes)
    meta = {k: v for k, v in meta.items() if v is not None}
    (folder / ADAPTER_META).write_text(json.dumps(meta))
    return folder


def test_adapter_prompt_format_metadata(tiny_causal_dir: Path, causal_adapter: Path, tmp_path: Path) -> None:
    """No key (adapters from before the choice) means rules; an unknown value is one line."""
    shipped = json.loads((EMBEDDED_ADAPTER_DIR / ADAPTER_META).read_text())
    assert (shipped["prompt_format"], shipped["speakers"]) == (COMPACT, TAGS)  # the shipped adapter says how it is served
    older = _adapter_with_meta(causal_adapter, tmp_path / "older", prompt_format=None)
    assert load_backend(str(tiny_causal_dir), device="cpu", adapter=str(older)).prompt_format == RULES
    assert load_backend(str(tiny_causal_dir), device="cpu").prompt_format == RULES  # untuned
    for bad in ("verbose", 3):
        folder = _adapter_with_meta(causal_adapter, tmp_path / f"bad-{bad}", prompt_format=bad)
        with pytest.raises(ModelLoadError) as err:
            load_backend(str(tiny_causal_dir), device="cpu", adapter=str(folder))
        assert "\n" not in str(err.value) and ADAPTER_META in str(err.value)
        assert f"unknown prompt format {str(bad)!r} (allowed: rules, compact)" in str(err.value)


def test_model_adapter_setting_values(tmp_path: Path) -> None:
    assert resolve_adapter("embedded", "none") is None
    assert resolve_adapter("some/hub-model", "auto") is None
    shipped = EMBEDDED_ADAPTER_DIR if (EMBEDDED_ADAPTER_DIR / ADAPTER_META).is_file() else None
    assert resolve_adapter("embedded", "auto") == shipped
    assert resolve_adapter("embedded", str(tmp_path)) == tmp_path


def test_summarizer_writes_no_answer_start_for_a_tuned_adapter(tiny_causal_dir: Path, causal_adapter: Path) -> None:
    """The adapter learned to answer without "A and B discuss": the prompt must not prefill it."""
    from engine.executor import Executor
    from engine.summarizer import Summarizer

    seen: list[Prompt] = []

    async def run() -> None:
        backend = load_backend(str(tiny_causal_dir), device="cpu", adapter=str(causal_adapter))
        original = backend.generate_batch

        def spy(prompts, settings, **kw):  # noqa: ANN001, ANN003 - records what reaches the model
            seen.extend(prompts)
            return original(prompts, settings, **kw)

        backend.generate_batch = spy
        async with Executor(lambda: backend, max_batch_wait_ms=1) as executor:
            try:
                await Summarizer(executor).summarize(parse_transcript("Ann: hi\nBo: the roller is broken").messages)
            except Exception:  # noqa: BLE001 - a random model may write nothing usable; the prompt is what counts
                pass

    asyncio.run(run())
    assert seen and all(p.prefix == "" for p in seen)


# --- the command ---------------------------------------------------------------------------


def run_finetune(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "MODEL", "MODEL_FILE", "DEVICE", "MODEL_ADAPTER")}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "bot", "--env-file", os.devnull, "finetune", *args],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600)


def test_finetune_command_end_to_end(words_model: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "dialogsum_train.jsonl", RECORDS)
    dev = write_jsonl(tmp_path / "dev.jsonl", RECORDS[:2])
    out = tmp_path / "adapter"
    env = {"MODEL": str(words_model), "DEVICE": "cpu", "MODEL_CACHE_DIR": str(tmp_path / "cache"),
           "LOG_LEVEL": "WARNING", "MAX_BATCH_WAIT_MS": "5"}
    result = run_finetune("--data", str(data), "--out", str(out), "--max-steps", "3", "--batch-size", "2",
                          "--rank", "4", "--eval", str(dev), "--eval-limit", "2", "--checkpoint-every", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert "step 3/3" in result.stderr and "tok/s" in result.stderr and "ETA" in result.stderr
    assert "| base (" in result.stdout and "| tuned (" in result.stdout and "+ adapter adapter)" in result.stdout
    card = (out / "README.md").read_text()
    assert "CC BY-NC-SA 4.0" in card and "3 steps" in card and "--max-steps 3" in card and "| lead-2 |" in card
    # One epoch of 5 examples in batches of 2: the last batch is short.
    assert re.search(r"\(\d+ threads, auto precision\): 5 examples seen in 0:00:\d\d of training, [\d.]+ examples/s", card), card
    assert "`python -m bot finetune --data " in card  # the command as given, without the global options
    assert {"adapter_config.json", "adapter_model.safetensors", ADAPTER_META} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / ADAPTER_META).read_text())
    assert (meta["prompt_format"], meta["speakers"]) == (COMPACT, TAGS)  # the defaults for new adapters
    # The adapter serves: eval with --adapter names it.
    evaluated = subprocess.run([sys.executable, "-m", "bot", "--env-file", os.devnull, "eval", "--data", str(dev),
                                "--adapter", str(out), "--json", "--max-new-tokens", "16"],
                               cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["model"].endswith("+ adapter adapter")


def test_compact_adapter_is_trained_and_served_on_compact_prompts(words_model: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    out = tmp_path / "compact"
    result = run_finetune("--data", str(data), "--out", str(out), "--max-steps", "1", "--batch-size", "2", "--rank", "4",
                          "--prompt-format", "compact", "--speakers", "names", env={"MODEL": str(words_model), "DEVICE": "cpu", "LOG_LEVEL": "WARNING"})
    assert result.returncode == 0, result.stderr
    assert json.loads((out / ADAPTER_META).read_text())["prompt_format"] == COMPACT
    assert "Recap's `compact` prompts" in (out / "README.md").read_text()
    messages = parse_transcript("Ann: the roller is broken\nBo: I'll call facilities").messages

    async def served_prompt() -> Prompt:
        backend = load_backend(str(words_model), device="cpu", adapter=str(out))
        assert backend.prompt_format == COMPACT
        async with Recording(lambda: backend, max_batch_wait_ms=1) as executor:
            await Summarizer(executor).summarize(messages)
        return executor.requests[0].prompt

    transcript = build_transcript(messages)
    expected = summary_prompt(transcript.render(), transcript.participants, "medium", "paragraph", 2, COMPACT)
    assert asyncio.run(served_prompt()) == Prompt(expected.system, expected.user, "")  # tuned: no written answer start


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"dialogue": "A: hi"}\n', "bad.jsonl: line 1: no reference summary"),
        ('{"dialogue": "A: hi", "summary": "x"}\nnot json\n', "bad.jsonl: line 2, column 1: invalid JSON"),
        ("", "bad.jsonl: no records"),
        ('{"dialogue": "just prose", "summary": "x"}\n', "line 1: unknown format"),
        ("[" * 100_000 + "]" * 100_000 + "\n", "bad.jsonl: line 1: invalid JSON (nested too deeply)"),
        ('{"dialogue": "A: hi", "summary": ' + "1" * 5000 + "}\n", "bad.jsonl: line 1: invalid JSON (Exceeds the limit"),
    ],
)
def test_finetune_bad_data_is_one_clear_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    result = run_finetune("--data", str(path), "--out", str(tmp_path / "o"), env={"MODEL": "/nonexistent/model"})
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_finetune_skips_examples_over_the_budget_and_says_so(words_model: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    result = run_finetune("--data", str(data), "--out", str(tmp_path / "o"), "--max-tokens", "20", "--max-steps", "1",
                          env={"MODEL": str(words_model), "DEVICE": "cpu", "LOG_LEVEL": "WARNING"})
    assert result.returncode == 1 and "skipped as longer than --max-tokens 20" in result.stderr
    assert "error: no training examples are left" in result.stderr and "Traceback" not in result.stderr


def test_answer_only_logits_give_the_models_own_loss(tiny_causal_dir: Path, tmp_path: Path) -> None:
    """The trainer projects only answer positions onto the vocabulary; the loss must equal the full one."""
    import torch

    from tuning.trainer import collate

    backend = load_backend(str(tiny_causal_dir), device="cpu")
    examples, _ = tokenize(backend, build_examples(records(), seed=0), 4096)
    trainer = Trainer(backend, examples, fast_config(), tmp_path / "a")
    trainer._build()
    batch = collate(examples[:3], backend.tokenizer.pad_token_id, False, "cpu")
    with torch.no_grad():
        assert torch.allclose(trainer._loss(batch), trainer.model(**batch).loss, rtol=1e-5)
