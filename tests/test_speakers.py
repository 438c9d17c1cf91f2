"""Speaker tags: the model sees #Person1#, #Person2# ... and the member reads the names, exactly as written."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from tuning.scoring import EvalRecord
from bot.exports import parse_transcript
from tuning.data import channel_examples, examples_for
from engine.conversation import ChatMessage
from engine.executor import Executor
from engine.adapters import write_adapter_meta
from engine.prompts import COMPACT, PROMPT_FORMATS, summary_prompt
from engine.remote_backend import RemoteBackend, RemoteConfig, connect
from engine.speakers import NAMES, SPEAKER_MODES, TAGS, check_speakers, tag_names, tag_transcript, untag
from engine.summarizer import Summarizer, SummaryOptions
from engine.transcript import build_transcript
from fake_openai import FakeOpenAI

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
CHAT = [("Amanda", "can we ship the release friday?"), ("Bob Lee", "yes, friday works, tests are green"),
        ("Amanda", "great, I'll write the notes")]


def messages() -> list[ChatMessage]:
    return [ChatMessage(1000 + i, name, text, created_at=T0 + timedelta(minutes=i)) for i, (name, text) in enumerate(CHAT)]


def test_a_tagged_transcript_changes_only_the_speakers() -> None:
    chat = messages() + [ChatMessage(1003, "Bob Lee", "sure", reply_to=1002)]
    transcript = build_transcript(chat)
    tagged, names = tag_transcript(transcript)
    assert names == {"#Person1#": "Amanda", "#Person2#": "Bob Lee"}
    assert tagged.participants == ["#Person1#", "#Person2#"]
    assert tagged.render().splitlines() == [
        "[1] #Person1#: can we ship the release friday?",
        "[2] #Person2#: yes, friday works, tests are green",
        "[3] #Person1#: great, I'll write the notes",
        "[4] #Person2# (replying to [3]): sure",
    ]
    assert [line.message_id for line in tagged.lines] == [line.message_id for line in transcript.lines]
    assert (tagged.start, tagged.end) == (transcript.start, transcript.end)


def test_tags_map_back_to_the_exact_names_in_every_form_a_model_writes() -> None:
    names = {"#Person1#": "Amanda", "#Person2#": "Bob Lee"}
    assert untag("#Person1# asks #Person2#'s view; Person2 agrees and #Person1 writes notes.", names) == (
        "Amanda asks Bob Lee's view; Bob Lee agrees and Amanda writes notes.")
    assert untag("#Person3# was not there. Personal1 stays.", names) == "#Person3# was not there. Personal1 stays."
    # The inverse, for training data: whole names only, the longer first.
    assert tag_names("Bob Lee thanks Amanda; Bobby and Amandaline are others.", names) == (
        "#Person2# thanks #Person1#; Bobby and Amandaline are others.")
    assert [check_speakers(m) for m in SPEAKER_MODES] == [NAMES, TAGS]
    with pytest.raises(ValueError, match="allowed: names, tags"):
        check_speakers("initials")
    with pytest.raises(ValueError, match="speaker mode"):
        write_adapter_meta(Path("/nonexistent"), {"base": {}, "speakers": "initials"})


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


async def test_a_tags_model_sees_tags_and_the_member_reads_names(server: FakeOpenAI) -> None:
    """Everything real but the server's answers (the network edge): the backend says it was tuned on tags."""
    server.answer = lambda body: "#Person1# asks to ship on friday and Person2 agrees [1][2]. #Person1# writes the notes [3]."
    config = RemoteConfig(server.url, retries=0, backoff_s=0.01, timeout_s=30.0)

    def tuned_on_tags() -> RemoteBackend:
        backend = connect(config)
        backend.speakers = TAGS
        return backend

    executor = Executor(tuned_on_tags, max_batch_wait_ms=20)
    await executor.start()
    try:
        summary = await Summarizer(executor).summarize(messages(), SummaryOptions("short", "paragraph"))
    finally:
        await executor.aclose()
    assert summary.fallback is None
    assert summary.text == "Amanda asks to ship on friday and Bob Lee agrees. Amanda writes the notes."
    assert summary.participants == ["Amanda", "Bob Lee"] and summary.citations == [1000, 1001, 1002]
    [body] = server.requests
    prompt = body["messages"][1]["content"]
    assert "[1] #Person1#: can we ship" in prompt and "People in this conversation: #Person1#, #Person2#." in prompt
    assert "Amanda" not in prompt and "Bob Lee" not in prompt


@pytest.mark.parametrize("prompt_format", PROMPT_FORMATS)
def test_tags_training_examples_are_what_a_tags_model_is_served(prompt_format: str) -> None:
    record = EvalRecord(1, "#Person2#: Did you book the tickets?\n#Person1#: Not yet.\n#Person2#: I'll call the station.",
                        ("#Person1# hasn't booked the tickets. #Person2# will call the station.",))
    example = examples_for(record, seed=0, prompt_format=prompt_format, speakers=TAGS)[0]
    # Numbered by first message, as serving does: the dialogue's #Person2# speaks first, so it is #Person1#.
    assert example.answer.startswith("#Person2# hasn't booked the tickets") and "#Person1# will call the station" in example.answer
    chat = example.prompt_user.split("<<<CHAT>>>\n", 1)[1].split("\n<<<END OF CHAT>>>", 1)[0]
    assert chat.splitlines()[0] == "[1] #Person1#: Did you book the tickets?"
    # What the summarizer sends a tags model for the same chat, with any names the chat shows.
    names_chat = "\n".join(line.split("] ", 1)[1].replace("#Person1#", "Ivy").replace("#Person2#", "Leo")
                           for line in chat.splitlines())
    tagged, _ = tag_transcript(build_transcript(parse_transcript(names_chat).messages))
    served = summary_prompt(tagged.render(), tagged.participants, example.length, "paragraph", len(tagged.lines), prompt_format)
    assert (example.prompt_system, example.prompt_user) == (served.system, served.user)


def test_a_tags_channel_numbers_its_cast_once_across_its_dialogues() -> None:
    dialogues = [("#Person1#: The printer on floor two is jammed.\n#Person2#: I'll ask facilities about the roller.",
                  "#Person1# reports the printer and #Person2# will ask facilities about the roller."),
                 ("#Person1#: When does the pool open?\n#Person2#: At seven, lanes reserved until eight.",
                  "#Person2# says the pool opens at seven with lanes reserved until eight."),
                 ("#Person1#: The budget is due Friday.\n#Person2#: I'll draft it tomorrow morning.",
                  "#Person2# will draft the budget due Friday.")]
    records = [EvalRecord(i, d, (s,)) for i, (d, s) in enumerate(dialogues, 1)]
    notes_ex, combine_ex = channel_examples(records, seed=0, prompt_format=COMPACT, speakers=TAGS)
    people = re.search(r"People in this conversation: (.*)\.", combine_ex.prompt_user).group(1).split(", ")
    assert people == [f"#Person{i}#" for i in range(1, len(people) + 1)] and 2 <= len(people) <= 6
    assert not re.search(r"\b[A-Z][a-z]+ (reports|says|will)", combine_ex.prompt_user + combine_ex.answer)  # no names
    assert set(re.findall(r"#Person\d+#", combine_ex.answer)) <= set(people)
    assert set(re.findall(r"#Person\d+#", notes_ex.prompt_user + notes_ex.answer)) <= set(people)
