"""Export and transcript parsing: real files in, ChatMessage lists out."""

from __future__ import annotations

import copy
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.exports import ExportError, load_conversation, parse_export, parse_text, parse_transcript

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "small_export.json"
SAMPLE = Path(__file__).parents[1] / "bot" / "data" / "sample_conversation.json"


def message(**fields: Any) -> dict[str, Any]:
    """A minimal export message; tests add or remove fields around it."""
    base: dict[str, Any] = {
        "id": "1213400000000000100",
        "type": "Default",
        "timestamp": "2024-03-01T09:00:00+00:00",
        "content": "hello",
        "author": {"id": "700000000000000001", "name": "ada", "nickname": None, "isBot": False},
    }
    base.update(fields)
    return base


def export(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"guild": {"id": "1", "name": "g"}, "channel": {"id": "2", "name": "c"}, "messages": list(messages)}


def error_of(data: Any) -> str:
    with pytest.raises(ExportError) as info:
        parse_export(data, "export.json")
    return str(info.value)


# --- DiscordChatExporter exports --------------------------------------------------------


def test_small_export_reads_messages_in_order_with_ids_and_utc_times() -> None:
    conv = load_conversation(str(SMALL))
    assert conv.format == "discord-export"
    assert (conv.guild_id, conv.channel_id, conv.channel_name) == (900000000000000001, 900000000000000002, "planning")
    ids = [m.id for m in conv.messages]
    assert ids == sorted(ids)
    first = conv.messages[0]
    assert first.author == "Ada" and first.author_id == 700000000000000001
    assert first.created_at == datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
    assert first.guild_id == 900000000000000001 and first.channel_id == 900000000000000002


def test_reply_keeps_reference_mentions_and_falls_back_to_account_name() -> None:
    conv = load_conversation(str(SMALL))
    reply = next(m for m in conv.messages if m.id == 1213400000000000020)
    assert reply.reply_to == 1213400000000000010
    assert reply.author == "bo"  # no nickname: the account name
    assert reply.mentions == {700000000000000001: "Ada"}
    assert reply.text == "On it @Ada :thumbsup:"


def test_local_text_attachment_is_read_and_binary_is_only_named() -> None:
    conv = load_conversation(str(SMALL))
    notes, image = conv.messages[0].attachments
    assert notes.filename == "deploy notes.txt" and notes.size == 62
    assert notes.text is not None and "run migrations" in notes.text  # percent-encoded path resolved
    assert notes.content_type == "text/plain"
    assert image.filename == "diagram.png" and image.text is None and image.content_type == "image/png"


def test_text_attachment_over_the_size_cap_is_named_not_read() -> None:
    conv = load_conversation(str(SMALL), attachment_max_bytes=10)
    assert conv.messages[0].attachments[0].text is None
    assert any("deploy notes.txt" in w for w in conv.warnings)


def test_remote_attachment_url_is_never_fetched(tmp_path: Path) -> None:
    url = "https://cdn.discordapp.com/attachments/1/2/log.txt"
    data = export(message(attachments=[{"id": "3", "url": url, "fileName": "log.txt", "fileSizeBytes": 12}]))
    conv = parse_export(data, "e.json", base_dir=tmp_path)
    (att,) = conv.messages[0].attachments
    assert att.filename == "log.txt" and att.text is None


def test_text_attachment_with_binary_content_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "fake.txt").write_bytes(b"abc\x00\x01\x02")
    data = export(message(attachments=[{"id": "3", "url": "fake.txt", "fileName": "fake.txt", "fileSizeBytes": 6}]))
    conv = parse_export(data, "e.json", base_dir=tmp_path)
    assert conv.messages[0].attachments[0].text is None


def attachment_export(tmp_path: Path, *urls: str, file_name: str = "notes.txt") -> Path:
    folder = tmp_path / "export"
    folder.mkdir(exist_ok=True)
    atts = [{"id": str(i), "url": url, "fileName": file_name, "fileSizeBytes": 20} for i, url in enumerate(urls)]
    path = folder / "export.json"
    path.write_text(json.dumps(export(message(attachments=atts))), encoding="utf-8")
    return path


def test_export_cannot_pull_in_files_outside_its_folder(tmp_path: Path) -> None:
    secret = tmp_path / "app"
    secret.mkdir()
    (secret / ".env").write_text("DISCORD_TOKEN=the-secret-token\n", encoding="utf-8")
    (secret / "token.txt").write_text("the-secret-token\n", encoding="utf-8")
    path = attachment_export(
        tmp_path, str(secret / ".env"), str(secret / "token.txt"), "../app/token.txt", "..%2Fapp%2Ftoken.txt",
        f"file://{secret / 'token.txt'}", f"file://localhost{secret / 'token.txt'}", "link.txt", "linkdir/token.txt",
        "sub/../../app/token.txt",
    )
    (path.parent / "link.txt").symlink_to(secret / "token.txt")
    (path.parent / "linkdir").symlink_to(secret, target_is_directory=True)
    conv = load_conversation(str(path))
    attachments = conv.messages[0].attachments
    assert len(attachments) == 9 and all(a.text is None for a in attachments)
    assert len([w for w in conv.warnings if "not read" in w]) == 9


def test_files_inside_the_export_folder_are_read_by_path_or_file_url(tmp_path: Path) -> None:
    path = attachment_export(tmp_path, "media/notes.txt", str(tmp_path / "export" / "media" / "notes.txt"),
                             f"file://{tmp_path / 'export' / 'media' / 'notes%20x.txt'}")
    (path.parent / "media").mkdir()
    (path.parent / "media" / "notes.txt").write_text("ship on friday", encoding="utf-8")
    (path.parent / "media" / "notes x.txt").write_text("ship on monday", encoding="utf-8")
    texts = [a.text for a in load_conversation(str(path)).messages[0].attachments]
    assert texts == ["ship on friday", "ship on friday", "ship on monday"]


def test_the_real_file_decides_whether_it_is_text_not_the_file_name(tmp_path: Path) -> None:
    # fileName claims text, the real file is an image whose bytes happen to decode: not read.
    path = attachment_export(tmp_path, "photo.png", file_name="notes.txt")
    (path.parent / "photo.png").write_bytes(b"plain looking bytes")
    assert load_conversation(str(path)).messages[0].attachments[0].text is None
    # fileName claims an image, the real file is text: read, and marked as text for the transcript.
    path = attachment_export(tmp_path, "real.txt", file_name="picture.png")
    (path.parent / "real.txt").write_text("the agenda", encoding="utf-8")
    (att,) = load_conversation(str(path)).messages[0].attachments
    assert att.text == "the agenda" and att.content_type == "text/plain"


def test_stdin_exports_read_no_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notes.txt").write_text("secret notes", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    data = export(message(attachments=[{"id": "3", "url": "notes.txt", "fileName": "notes.txt", "fileSizeBytes": 12}]))
    conv = load_conversation("-", stdin=io.StringIO(json.dumps(data)))
    assert conv.messages[0].attachments[0].text is None
    assert any("not stdin" in w for w in conv.warnings)


def test_system_messages_are_marked_and_given_text() -> None:
    conv = load_conversation(str(SMALL))
    by_id = {m.id: m for m in conv.messages}
    thread = by_id[1213400000000000030]
    assert thread.is_system and thread.text == "started a thread."  # empty content: fallback text
    join = by_id[1213400000000000060]
    assert join.is_system and join.text == "Joined the server." and join.author == "Cy"
    assert not by_id[1213400000000000010].is_system and not by_id[1213400000000000020].is_system


def test_embed_only_bot_message_reads_the_embed_and_empty_messages_are_skipped() -> None:
    conv = load_conversation(str(SMALL))
    bot = next(m for m in conv.messages if m.id == 1213400000000000040)
    assert bot.is_bot and bot.text == "Deploy finished\nstaging is on v2.1"
    assert 1213400000000000050 not in {m.id for m in conv.messages}  # whitespace-only, reactions only
    assert conv.skipped == 1


def test_older_export_reference_on_default_message_and_missing_optional_fields() -> None:
    old = {"id": "1213400000000000200", "content": "me too", "reference": {"messageId": "1213400000000000100"}}
    conv = parse_export(export(message(), old), "old.json")
    assert len(conv.messages) == 2
    reply = conv.messages[1]
    assert reply.reply_to == 1213400000000000100
    assert reply.author == "Unknown user" and reply.created_at is None and reply.attachments == []
    assert not reply.is_system  # no type: a Default message


def test_newer_fields_roles_and_inline_emojis_are_accepted() -> None:
    msg = message(
        content="ship it :shipit:",
        inlineEmojis=[{"id": "55", "name": "shipit", "code": "shipit", "isAnimated": False, "imageUrl": "x.png"}],
        author={"id": "7", "name": "ada", "nickname": "Ada", "isBot": False, "roles": [{"id": "9", "name": "mod"}]},
    )
    conv = parse_export(export(msg), "new.json")
    assert conv.messages[0].text == "ship it :shipit:" and conv.messages[0].author == "Ada"


def test_messages_are_sorted_by_snowflake() -> None:
    later = message(id="1213400000000000300", content="second")
    earlier = message(id="1213400000000000100", content="first")
    conv = parse_export(export(later, earlier), "e.json")
    assert [m.text for m in conv.messages] == ["first", "second"]


def test_thread_export_uses_the_thread_as_channel() -> None:
    data = export(message(type="ThreadStarterMessage", content="the thread's first post"), message(id="1213400000000000101", type="Reply"))
    data["channel"] = {"id": "1213300000000000000", "type": "GuildPublicThread", "name": "release-thread", "category": "dev"}
    conv = parse_export(data, "thread.json")
    assert conv.channel_id == 1213300000000000000 and conv.channel_name == "release-thread"
    assert [m.is_system for m in conv.messages] == [False, False]
    assert all(m.channel_id == 1213300000000000000 for m in conv.messages)


def test_direct_message_export_has_no_guild() -> None:
    data = export(message())
    data["guild"] = {"id": "0", "name": "Direct Messages"}
    assert parse_export(data, "dm.json").messages[0].guild_id is None


def test_naive_timestamp_is_taken_as_utc_and_z_suffix_parses() -> None:
    conv = parse_export(export(message(timestamp="2024-03-01T09:00:00"), message(id="1213400000000000101", timestamp="2024-03-01T09:00:00Z")), "e")
    assert conv.messages[0].created_at == conv.messages[1].created_at == datetime(2024, 3, 1, 9, tzinfo=timezone.utc)


def test_sample_conversation_parses_with_every_feature() -> None:
    conv = load_conversation(str(SAMPLE))
    messages = conv.messages
    assert 40 <= len(messages) <= 80
    assert any(m.is_bot for m in messages)
    assert any(m.is_system for m in messages)
    assert any(m.reply_to for m in messages)
    assert any(a.filename.endswith(".txt") for m in messages for a in m.attachments)
    assert any(a.filename.endswith(".png") for m in messages for a in m.attachments)
    ids = {m.id for m in messages}
    assert all(m.reply_to in ids for m in messages if m.reply_to)  # reply chain stays inside the export
    times = [m.created_at for m in messages]
    assert times == sorted(times)


# --- errors name the place --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m.update(timestamp="yesterday"), "export.json: messages[0].timestamp: not an ISO 8601 time: 'yesterday'"),
        (lambda m: m.update(timestamp=12), "export.json: messages[0].timestamp: not an ISO 8601 time (found a number)"),
        (lambda m: m.update(id="abc"), "export.json: messages[0].id: not a Discord id: 'abc'"),
        (lambda m: m.pop("id"), "export.json: messages[0].id: missing"),
        (lambda m: m.update(content=["x"]), "export.json: messages[0].content: expected text, found a list"),
        (lambda m: m.update(author="ada"), "export.json: messages[0].author: expected an object, found text"),
        (lambda m: m.update(attachments={}), "export.json: messages[0].attachments: expected a list, found an object"),
        (lambda m: m.update(attachments=[{"fileName": "a", "fileSizeBytes": "big"}]), "messages[0].attachments[0].fileSizeBytes"),
        (lambda m: m.update(reference={"messageId": "x1"}), "messages[0].reference.messageId: not a Discord id"),
    ],
)
def test_bad_field_is_named(change: Any, expected: str) -> None:
    msg = message()
    change(msg)
    assert expected in error_of(export(msg))


def test_error_names_the_index_of_the_bad_message() -> None:
    data = export(*[message(id=str(1213400000000000100 + i)) for i in range(13)])
    data["messages"][12]["timestamp"] = "2024-13-45"
    assert error_of(data).startswith("export.json: messages[12].timestamp: not an ISO 8601 time")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1, 2], "found a list at the top level"),
        ({"guild": {}}, "no \"messages\" list"),
        ({"messages": {}}, "no \"messages\" list"),
        ({"messages": []}, "empty input"),
        ({"messages": [message(content="")]}, "empty input"),
        ({"messages": ["hi"]}, "messages[0]: expected an object, found text"),
        ({"guild": "g", "messages": [message()]}, "guild: expected an object"),
    ],
)
def test_wrong_shape_is_explained(data: Any, expected: str) -> None:
    assert expected in error_of(copy.deepcopy(data))


def test_json_syntax_error_gives_line_and_column() -> None:
    with pytest.raises(ExportError, match=r"^x\.json: line 2, column 14: invalid JSON \("):
        parse_text('{"messages": [\n  {"id": "1",, "content": "a"}]}', "x.json")


@pytest.mark.parametrize("text", ["", "   \n\n\t"])
def test_empty_input(text: str) -> None:
    with pytest.raises(ExportError, match="empty input"):
        parse_text(text, "e.txt")


def test_unknown_format_names_the_line() -> None:
    with pytest.raises(ExportError, match=r"e\.txt: line 1: unknown format"):
        parse_text("just some prose without speakers\nmore prose", "e.txt")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no such file"):
        load_conversation(str(tmp_path / "nope.json"))
    with pytest.raises(ExportError, match="is a directory"):
        load_conversation(str(tmp_path))


def test_non_utf8_file(tmp_path: Path) -> None:
    bad = tmp_path / "latin.txt"
    bad.write_bytes("Zoë: hi".encode("latin-1"))
    with pytest.raises(ExportError, match="latin.txt: not UTF-8 text"):
        load_conversation(str(bad))


# --- plain transcripts ------------------------------------------------------------------


def test_transcript_continuations_blank_lines_and_urls() -> None:
    conv = load_conversation(str(FIXTURES / "transcript.txt"))
    assert conv.format == "transcript"
    assert [(m.author, m.text) for m in conv.messages] == [
        ("Ada", "We need to pick a venue for the meetup.\nThe library is free on Thursdays,\nbut it closes at 8."),
        ("Bo", "The library works for me. I'll book it: https://example.org/rooms"),
        ("Ada", "Great, thanks Bo."),
    ]
    assert all(m.id is None and m.created_at is None for m in conv.messages)


def test_dialogsum_person_tags() -> None:
    conv = parse_transcript("#Person1#: Hello, how are you?\n#Person2#: Fine.\nReally fine.\n#Person1#: Good to hear: truly.")
    assert [m.author for m in conv.messages] == ["#Person1#", "#Person2#", "#Person1#"]
    assert conv.messages[1].text == "Fine.\nReally fine."
    assert conv.messages[2].text == "Good to hear: truly."


def test_times_and_long_phrases_are_not_speakers() -> None:
    conv = parse_transcript("Ada: meet at\n12:30 at the station\nthis is a long sentence that is not a name: really\nBo: ok")
    assert [m.author for m in conv.messages] == ["Ada", "Bo"]
    assert conv.messages[0].text.endswith("this is a long sentence that is not a name: really")


def test_speaker_with_empty_first_line_collects_continuations() -> None:
    conv = parse_transcript("Ada:\n  first point\n  second point\nBo: noted")
    assert conv.messages[0].text == "first point\nsecond point"


def test_stdin_is_read_for_dash() -> None:
    conv = load_conversation("-", stdin=io.StringIO("Ada: hi\nBo: hello"))
    assert conv.source == "<stdin>" and len(conv.messages) == 2


def test_stdin_json_export() -> None:
    conv = load_conversation("-", stdin=io.StringIO(json.dumps(export(message()))))
    assert conv.format == "discord-export" and conv.messages[0].text == "hello"
