"""The fake Discord checked with a plain discord.py client over real HTTP and websockets."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands

from fakediscord import FakeDiscord, World
from fakediscord.interactions import CommandMismatch

TOKEN = "fake.token.value"


class Probe(discord.Client):
    """A small client with the kind of commands the real bot has."""

    def __init__(self, guild_id: int) -> None:
        intents = discord.Intents.default()
        intents.members = intents.message_content = True
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.guild_object = discord.Object(guild_id)
        self.read: list[discord.Message] = []

        @self.tree.command(name="summarize", description="Summarize recent messages")
        @app_commands.describe(messages="how many")
        async def summarize(interaction: discord.Interaction, messages: app_commands.Range[int, 1, 500] = 50,
                            channel: discord.TextChannel | None = None) -> None:
            await interaction.response.defer(thinking=True)
            target = channel or interaction.channel
            assert isinstance(target, discord.TextChannel)
            self.read = [m async for m in target.history(limit=messages)]
            texts = [(await a.read()).decode() for m in self.read for a in m.attachments]
            embed = discord.Embed(title="Summary", description=f"{len(self.read)} messages; files: {texts}")
            await interaction.followup.send(embed=embed, allowed_mentions=discord.AllowedMentions.none())

        settings = app_commands.Group(name="settings", description="Server settings")

        @settings.command(name="set", description="Change a setting")
        @app_commands.choices(key=[app_commands.Choice(name="length", value="length")])
        async def settings_set(interaction: discord.Interaction, key: str, value: str) -> None:
            await interaction.response.send_message(f"{key}={value}", ephemeral=True,
                                                    allowed_mentions=discord.AllowedMentions.none())

        self.tree.add_command(settings)

        @self.tree.command(name="export", description="Send a file privately")
        async def export(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.edit_original_response(content="Reading…")
            file = discord.File(io.BytesIO(b"line one\nline two\n"), filename="summary.txt")
            await interaction.edit_original_response(content=None, attachments=[file],
                                                     allowed_mentions=discord.AllowedMentions.none())

    async def setup_hook(self) -> None:
        self.tree.copy_global_to(guild=self.guild_object)
        await self.tree.sync(guild=self.guild_object)


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as server:
        monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url))
        yield server
        assert server.errors == []
        assert server.unhandled == []


@pytest.fixture
async def probe(fake: FakeDiscord) -> AsyncIterator[Probe]:
    client = Probe(fake.world.guild_id)
    async with client:
        task = asyncio.create_task(client.start(TOKEN))
        await asyncio.wait_for(client.wait_until_ready(), 10)
        yield client
        await client.close()
        await asyncio.wait_for(task, 10)


async def test_login_ready_and_guild_state(fake: FakeDiscord, probe: Probe) -> None:
    world = fake.world
    assert probe.user is not None and probe.user.id == world.bot.id
    assert probe.application_id == world.application_id
    guild = probe.get_guild(world.guild_id)
    assert guild is not None and guild.owner_id == world.owner.user.id
    assert guild.default_role.id == world.guild_id
    assert {m.id for m in guild.members} == set(world.members)
    general = guild.get_channel(world.general.id)
    assert isinstance(general, discord.TextChannel)
    newcomer = guild.get_member(world.newcomer.user.id)
    regular = guild.get_member(world.member.user.id)
    moderator = guild.get_member(world.moderator.user.id)
    assert newcomer and regular and moderator and guild.me
    assert not general.permissions_for(newcomer).read_message_history
    assert general.permissions_for(regular).read_message_history
    assert moderator.guild_permissions.manage_guild and not regular.guild_permissions.manage_guild
    staff = guild.get_channel(world.staff.id)
    assert staff and not staff.permissions_for(regular).view_channel and staff.permissions_for(guild.me).view_channel
    assert fake.gateway.identifies[0]["intents"] == probe.intents.value


async def test_wrong_token_is_refused(fake: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.default())
    async with client:
        with pytest.raises(discord.LoginFailure):
            await client.login("not.the.token")
    assert fake.requests[-1].status == 401


async def test_command_sync_is_recorded_with_ids(fake: FakeDiscord, probe: Probe) -> None:
    put = fake.requests_to("PUT", rf"/applications/{fake.world.application_id}/guilds/{fake.world.guild_id}/commands")
    assert len(put) == 1
    synced = fake.world.guild_commands[fake.world.guild_id]
    assert {c["name"] for c in synced} == {"summarize", "settings", "export"}
    assert all(c["id"].isdigit() for c in synced)
    fetched = await probe.tree.fetch_commands(guild=probe.guild_object)
    assert {c.name for c in fetched} == {"summarize", "settings", "export"}


async def test_history_pages_newest_first_like_discord(fake: FakeDiscord, probe: Probe) -> None:
    world = fake.world
    start = datetime.now(timezone.utc) - timedelta(days=1)
    seeded = [world.add_message(world.general.id, world.member, f"message {i}", at=start + timedelta(seconds=i))
              for i in range(130)]
    channel = probe.get_channel(world.general.id)
    assert isinstance(channel, discord.TextChannel)
    newest_first = [m.id async for m in channel.history(limit=None)]
    assert newest_first == [m.id for m in reversed(seeded)]
    assert [m.id async for m in channel.history(limit=None, oldest_first=True)] == [m.id for m in seeded]
    after = [m.id async for m in channel.history(limit=None, after=seeded[9])]
    assert after == [m.id for m in seeded[10:]]  # strictly after, in time order
    before = [m.id async for m in channel.history(limit=15, before=seeded[100])]
    assert before == [m.id for m in reversed(seeded[85:100])]
    around = [m.id async for m in channel.history(limit=11, around=seeded[50])]
    assert sorted(around) == [m.id for m in seeded[45:56]]
    # Paging asked for 100 at a time, then the rest.
    limits = [r.query["limit"] for r in fake.requests_to("GET", rf"/channels/{world.general.id}/messages")][:2]
    assert limits == ["100", "100"]


async def test_slash_command_round_trip(fake: FakeDiscord, probe: Probe) -> None:
    world = fake.world
    world.add_message(world.general.id, world.member, "notes attached",
                      attachments=[("notes.txt", b"ship on friday", "text/plain")])
    world.add_message(world.general.id, world.owner, "hello <@%d>" % world.member.user.id)
    record = await fake.slash("summarize", {"messages": 5})
    await fake.wait_for(lambda: record.followups, timeout=10, what="followup")
    assert record.callbacks[0]["body"]["type"] == 5
    assert record.callbacks[0]["at"] - record.sent_at < 3
    embed = record.embeds()[0]
    assert embed["title"] == "Summary" and "ship on friday" in embed["description"]
    assert record.followups[0]["allowed_mentions"] == {"parse": []}
    # The deferred "thinking" message sat in the channel when the command read history ...
    assert probe.read[0].interaction_metadata is not None and probe.read[0].author.id == world.bot.id
    assert probe.read[1].mentions[0].id == world.member.user.id
    # ... and the first followup replaced it, as Discord does.
    original = world.find_message(record.original_message_id or 0)
    assert original is not None and original.embeds and not original.flags & (1 << 7)
    assert record.followup_message_ids == [original.id]
    downloads = [r for r in fake.requests if r.path.startswith("/attachments/")]
    assert len(downloads) == 1 and downloads[0].status == 200


async def test_subcommand_options_checked_against_synced_schema(fake: FakeDiscord, probe: Probe) -> None:
    with pytest.raises(CommandMismatch, match="no option"):
        await fake.slash("settings set", {"key": "length", "valu": "long"})
    with pytest.raises(CommandMismatch, match="not one of"):
        await fake.slash("settings set", {"key": "style", "value": "long"})
    with pytest.raises(CommandMismatch, match="outside"):
        await fake.slash("summarize", {"messages": 0})
    record = await fake.slash("settings set", {"key": "length", "value": "long"}, invoker=fake.world.moderator)
    await fake.wait_for(lambda: record.callbacks, timeout=10, what="response")
    data = record.callbacks[0]["body"]["data"]
    assert data["content"] == "length=long" and data["flags"] == 64
    # Ephemeral replies are not part of the channel history.
    assert all(m.id != record.original_message_id for m in fake.world.messages[fake.world.general.id])


async def test_interaction_cannot_be_answered_twice(fake: FakeDiscord, probe: Probe) -> None:
    record = await fake.slash("settings set", {"key": "length", "value": "short"})
    await fake.wait_for(lambda: record.callbacks, timeout=10, what="response")
    url = f"{fake.api_base}/interactions/{record.id}/{record.token}/callback"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"type": 5}) as response:
            assert response.status == 400 and (await response.json())["code"] == 40060
        async with session.post(f"{fake.api_base}/webhooks/{fake.world.application_id}/bad-token",
                                json={"content": "x"}) as response:
            assert response.status == 404


async def test_button_click_updates_the_message(fake: FakeDiscord, probe: Probe) -> None:
    class Counter(discord.ui.View):
        @discord.ui.button(label="More", custom_id="recap:more")
        async def more(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            await interaction.response.edit_message(content="expanded", view=None)

    channel = probe.get_channel(fake.world.general.id)
    assert isinstance(channel, discord.TextChannel)
    view = Counter(timeout=None)
    sent = await channel.send("short", view=view, allowed_mentions=discord.AllowedMentions.none())
    message = fake.world.find_message(sent.id)
    assert message is not None and message.components
    record = await fake.click(message, "recap:more")
    await fake.wait_for(lambda: record.callbacks, timeout=10, what="button response")
    assert record.callbacks[0]["body"]["type"] == 7
    assert message.content == "expanded" and message.components == []


async def test_bot_without_view_access_gets_discord_errors(fake: FakeDiscord, probe: Probe) -> None:
    world = fake.world
    hidden = world.add_channel("hidden", overwrites=[
        {"id": str(world.guild_id), "type": 0, "allow": "0", "deny": str(1 << 10)}])
    partial = probe.get_partial_messageable(hidden.id)
    with pytest.raises(discord.Forbidden) as caught:
        await partial.send("hi")
    assert caught.value.code == 50001


async def test_gateway_resume_after_drop(fake: FakeDiscord, probe: Probe) -> None:
    resumed = asyncio.create_task(probe.wait_for("resumed"))
    await asyncio.sleep(0)
    await fake.gateway.disconnect_all(code=4000)
    await asyncio.wait_for(resumed, 15)
    assert len(fake.gateway.identifies) == 1
    record = await fake.slash("settings set", {"key": "length", "value": "long"})
    await fake.wait_for(lambda: record.callbacks, timeout=10, what="response after resume")


def test_world_permissions_follow_discord_rules() -> None:
    world = World()
    from fakediscord import permissions as p

    assert world.permissions_in(world.general, world.owner.user.id) == p.ALL
    assert not world.permissions_in(world.general, world.newcomer.user.id) & p.READ_MESSAGE_HISTORY
    assert world.permissions_in(world.general, world.newcomer.user.id) & p.VIEW_CHANNEL
    assert world.permissions_in(world.staff, world.member.user.id) == 0
    assert world.permissions_in(world.staff, world.moderator.user.id) & p.VIEW_CHANNEL
    assert world.permissions_in(world.staff, world.bot.id) & p.READ_MESSAGE_HISTORY


async def test_ephemeral_edits_with_an_uploaded_file(fake: FakeDiscord, probe: Probe) -> None:
    record = await fake.slash("export")
    await fake.wait_for(lambda: len(record.edits) == 2, timeout=10, what="two edits")
    assert record.callbacks[0]["body"] == {"type": 5, "data": {"flags": 64}}
    assert record.edits[0]["content"] == "Reading…"
    upload = next(r for r in fake.requests if r.method == "PATCH" and r.uploads)
    assert upload.uploads[0].filename == "summary.txt" and upload.body["allowed_mentions"] == {"parse": []}
    message = fake.world.find_message(record.original_message_id or 0)
    assert message is not None and message in fake.world.ephemeral and message.content == ""
    url = f"{fake.base_url}/attachments/{message.channel_id}/{message.attachments[0].id}/summary.txt"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert await response.read() == b"line one\nline two\n"


async def test_a_second_server_has_its_own_members_roles_and_channels(fake: FakeDiscord) -> None:
    world = fake.world
    other = world.add_guild("Other Server", "olga")
    room = world.add_channel("room", guild_id=other.id)
    guest = world.add_member("gus", "Gus", guild_id=other.id)
    world.add_message(room.id, guest, "only in the other server")
    client = Probe(world.guild_id)
    async with client:
        task = asyncio.create_task(client.start(TOKEN))
        await asyncio.wait_for(client.wait_until_ready(), 10)
        await client.tree.sync()  # global commands, which a server without its own sync uses
        first, second = client.get_guild(world.guild_id), client.get_guild(other.id)
        assert first is not None and second is not None
        assert {m.id for m in second.members} == {world.bot.id, other.owner_id, guest.user.id}
        assert guest.user.id not in {m.id for m in first.members}
        assert second.default_role.id == other.id and second.owner_id == other.owner_id
        assert [r.name for r in second.me.roles[1:]] == [world.bot.username] and second.me.roles[1].guild == second
        assert [c.id for c in second.text_channels] == [room.id] and first.get_channel(room.id) is None
        assert world.permissions_in(room, guest.user.id) & (1 << 16)
        assert world.permissions_in(room, world.member.user.id) == 0  # not a member there
        record = await fake.slash("summarize", {"messages": 5}, invoker=guest, channel=room)
        await fake.wait_for(lambda: record.followups, timeout=10, what="followup in the other server")
        assert record.payload["guild_id"] == str(other.id) and "guild_id" not in record.payload["data"]
        # Newest first: the deferred "thinking" message, then the other server's one message.
        assert client.read[0].author.id == world.bot.id
        assert [m.content for m in client.read[1:]] == ["only in the other server"]
        await client.close()
        await asyncio.wait_for(task, 10)
