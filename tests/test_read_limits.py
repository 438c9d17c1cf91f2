"""Limits on what one read of history may cost: messages scanned, attachment bytes, edits of unknown messages."""

from __future__ import annotations

import pytest
from simcord.enums import MessageType as SystemType
from simcord_helpers import World, recap_options, recap_world, reply_text  # noqa: F401

from core.reading import SCAN_SLACK
from storage import messages


def history_pages(w: World) -> list:
    return [e for e in w.env.http_requests if e.method == "GET" and e.path.endswith(f"/channels/{w.channel.id}/messages")]


async def offline(w: World) -> None:
    await w.env.advance_time(1)
    w.bot.coverage.connected(at=w.env.now())  # the bot reconnects: what came before is only in Discord's history


async def test_a_channel_of_system_messages_is_not_scanned_to_its_start(recap_world: World) -> None:
    w = recap_world
    w.env.backend.create_message(w.channel.id, w.alice.id, "the only real line, at the very start", broadcast=False)
    for _ in range(SCAN_SLACK + 300):
        w.env.backend.create_message(w.channel.id, w.alice.id, "joined", message_type=SystemType.NEW_MEMBER, broadcast=False)
    await offline(w)
    result = await w.alice.slash(w.channel, "summarize", messages=10)
    assert "no messages to summarize" in reply_text(result)
    assert len(history_pages(w)) <= (10 + 1 + SCAN_SLACK) // 100 + 1  # not the 14 pages to the channel's start


@pytest.mark.parametrize("recap_options", [{"settings": {"attachment_max_bytes": "1000", "attachment_read_max_bytes": "1500"}}])
async def test_one_read_downloads_at_most_its_attachment_budget(recap_world: World) -> None:
    w = recap_world
    for i in range(3):
        files = w.env.backend.store_attachments(w.channel.id, [(f"notes{i}.txt", f"plan {i} ".encode() * 75)])  # 600+ bytes
        w.env.backend.create_message(w.channel.id, w.alice.id, f"notes {i} attached", attachments=files, broadcast=False)
    await offline(w)
    await w.alice.slash(w.channel, "summarize")
    rows = await w.db.reading(messages.last_messages, w.channel.id, 10)
    read = {a.filename: a.text is not None for r in rows for a in r.attachments}
    assert read == {"notes0.txt": False, "notes1.txt": True, "notes2.txt": True}  # newest first, until 1500 bytes


async def test_an_edit_of_a_message_never_stored_downloads_nothing(recap_world: World) -> None:
    w = recap_world
    files = w.env.backend.store_attachments(w.channel.id, [("big-notes.txt", b"words " * 100)])
    unseen = w.env.backend.create_message(w.channel.id, w.alice.id, "sent while I was away", attachments=files,
                                          broadcast=False)
    await offline(w)
    cdn, downloads = w.env.backend.cdn, []
    real_get = cdn.get

    def recording_get(url: str):  # the fake Discord CDN: every attachment download lands here
        downloads.append(url)
        return real_get(url)

    cdn.get = recording_get
    w.env.backend.edit_message(w.channel.id, unseen.id, {"content": "edited while I'm here"})
    await w.env.settle()
    assert downloads == []
    assert await w.db.reading(messages.get_message, unseen.id) is None
