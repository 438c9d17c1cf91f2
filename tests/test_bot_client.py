"""RecapBot wiring (intents, mentions, cog loading, command sync) and the runner's start-up checks."""

from __future__ import annotations

import argparse
from pathlib import Path

import discord
import pytest
from aiohttp import web
from simcord_helpers import World, make_settings, recap_options, recap_world  # noqa: F401

from bot import runner
from bot.client import intents, shard_options
from core.app import App
from bot.config import ConfigError, Config


def command_puts(w: World) -> list[str]:
    return [e.path for e in w.env.http_requests if e.method == "PUT" and e.path.endswith("/commands")]


def test_intents_are_minimal() -> None:
    wanted = intents()
    assert wanted.guilds and wanted.guild_messages and wanted.message_content
    assert not wanted.members and not wanted.presences and not wanted.dm_messages


async def test_the_bot_is_what_the_core_reads(recap_world: World) -> None:
    """core takes an App rather than importing the client; the real client must be one."""
    assert isinstance(recap_world.bot, App)
    for name in App.__annotations__:
        assert hasattr(recap_world.bot, name), name


async def test_bot_defaults_to_no_pings(recap_world: World) -> None:
    assert recap_world.bot.allowed_mentions is not None
    assert recap_world.bot.allowed_mentions.to_dict() == {"parse": []}


async def test_commands_sync_once_and_again_only_when_the_tree_changes(recap_world: World) -> None:
    w = recap_world
    assert len(command_puts(w)) == 1  # the first start synced
    assert w.bot.sync_state_file.is_file()
    assert await w.bot.sync_commands(force=False) is None  # unchanged: no request
    assert len(command_puts(w)) == 1

    @discord.app_commands.command(name="extra")
    async def extra(interaction: discord.Interaction) -> None:
        """A new command changes the tree."""

    w.bot.tree.add_command(extra)
    assert await w.bot.sync_commands(force=False) is not None
    assert len(command_puts(w)) == 2


@pytest.mark.parametrize("recap_options", [{"extensions": ("cogs.errors", "cogs.not_there", "core.render", "cogs.status")}])
async def test_a_broken_cog_does_not_stop_the_others(recap_world: World) -> None:
    w = recap_world
    assert "core.render" in w.bot.failed_extensions  # no setup(): fails to load, logged
    assert "cogs.status" in w.bot.extensions
    result = await w.alice.slash(w.channel, "status")
    assert result.ephemeral


async def test_one_process_runs_every_shard_by_default(recap_world: World) -> None:
    assert isinstance(recap_world.bot, discord.AutoShardedClient)
    assert recap_world.bot.shard_count == 1 and sorted(recap_world.bot.shards) == [0]  # Discord's recommendation
    assert recap_world.bot.shard_scope() == (1, (0,))


@pytest.mark.parametrize("recap_options", [{"settings": {"shard_count": "3", "shard_ids": "0,1,2"}}])
async def test_shard_settings_reach_the_gateway(recap_world: World) -> None:
    w = recap_world
    assert w.bot.shard_count == 3 and sorted(w.bot.shards) == [0, 1, 2]
    assert w.bot.shard_scope() == (3, (0, 1, 2))
    result = await w.alice.slash(w.channel, "status")  # commands answer whichever shard the server is on
    assert result.ephemeral


def test_shard_settings() -> None:
    assert shard_options(Config.from_env({})) == {"shard_count": None, "shard_ids": None}
    assert shard_options(Config.from_env({"SHARD_COUNT": "4", "SHARD_IDS": "2, 3"})) == {"shard_count": 4, "shard_ids": [2, 3]}
    assert shard_options(Config.from_env({"SHARD_COUNT": "4"})) == {"shard_count": 4, "shard_ids": None}
    for environ, message in [({"SHARD_IDS": "0"}, "SHARD_IDS needs SHARD_COUNT"),
                             ({"SHARD_COUNT": "2", "SHARD_IDS": "0,2"}, "SHARD_IDS=0,2 is out of range"),
                             ({"SHARD_COUNT": "2", "SHARD_IDS": "0,0"}, "SHARD_IDS='0,0' is not allowed"),
                             ({"SHARD_COUNT": "2", "SHARD_IDS": "one"}, "SHARD_IDS='one' is not allowed")]:
        with pytest.raises(ConfigError, match=message):
            Config.from_env(environ)


def test_run_refuses_without_a_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    assert runner.main(argparse.Namespace(), settings) == 2
    err = capsys.readouterr().err
    assert "DISCORD_TOKEN is not set" in err


def test_test_endpoints_are_applied_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    runner.apply_test_endpoints({})
    assert discord.http.Route.BASE == "https://discord.com/api/v10"
    runner.apply_test_endpoints({runner.API_BASE_ENV: "http://127.0.0.1:9/api/v10/", runner.GATEWAY_ENV: "ws://127.0.0.1:9/gateway",
                                 runner.TEST_MODE_ENV: "1"})
    assert discord.http.Route.BASE == "http://127.0.0.1:9/api/v10"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:9/gateway"
    runner.apply_test_endpoints({runner.API_BASE_ENV: "http://[::1]:9/api", runner.GATEWAY_ENV: "ws://localhost:9/g",
                                 runner.TEST_MODE_ENV: "1"})
    assert discord.http.Route.BASE == "http://[::1]:9/api"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"RECAP_DISCORD_API_BASE": "http://127.0.0.1:9/api"}, "RECAP_DISCORD_API_BASE is for tests only and needs RECAP_TEST_MODE=1"),
        ({"RECAP_DISCORD_GATEWAY": "ws://127.0.0.1:9/g", "RECAP_TEST_MODE": "yes"}, "RECAP_DISCORD_GATEWAY is for tests only"),
        ({"RECAP_DISCORD_API_BASE": "https://evil.example.com/api", "RECAP_TEST_MODE": "1"}, "may only point at this machine"),
        ({"RECAP_DISCORD_API_BASE": "http://127.0.0.1@evil.example.com/api", "RECAP_TEST_MODE": "1"}, "without user info"),
        ({"RECAP_DISCORD_API_BASE": "http://localhost.evil.example.com/api", "RECAP_TEST_MODE": "1"}, "may only point at this machine"),
        ({"RECAP_DISCORD_API_BASE": "http://10.0.0.5/api", "RECAP_TEST_MODE": "1"}, "may only point at this machine"),
        ({"RECAP_DISCORD_GATEWAY": "wss://gateway.evil.example.com", "RECAP_TEST_MODE": "1"}, "RECAP_DISCORD_GATEWAY may only point"),
        ({"RECAP_DISCORD_API_BASE": "ftp://127.0.0.1/api", "RECAP_TEST_MODE": "1"}, "must be a http or https URL"),
    ],
)
def test_api_redirect_needs_the_test_flag_and_a_loopback_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], environ: dict[str, str], expected: str
) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    for name in (runner.API_BASE_ENV, runner.GATEWAY_ENV, runner.TEST_MODE_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    settings = make_settings(tmp_path, discord_token="the-token-value")
    assert runner.main(argparse.Namespace(), settings) == 2  # stops before connecting anywhere
    err = capsys.readouterr().err
    assert err.startswith("Configuration error: ") and expected in err and err.count("\n") == 1
    assert "the-token-value" not in err
    assert discord.http.Route.BASE == "https://discord.com/api/v10"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) != "wss://gateway.evil.example.com"


async def test_run_loads_the_model_first_and_reports_a_refused_token(
    tmp_path: Path, tiny_causal_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A fake Discord that refuses every token: the runner exits with a clear message, never showing the token."""
    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.path)
        body = b'{"message": "401: Unauthorized", "code": 0}'
        return web.Response(status=401, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    token = "not-a-real-token-123"
    settings = make_settings(tmp_path, discord_token=token, model=str(tiny_causal_dir), device="cpu")
    try:
        rc = await runner.run(settings)
    finally:
        await app_runner.cleanup()
    assert rc == 1
    assert "Discord refused the token" in capsys.readouterr().err
    assert seen and seen[0].endswith("/users/@me")
    assert token not in caplog.text
    assert Path(settings.database_path).is_file()  # the database was opened (and migrated) first


async def test_message_text_is_never_run_as_a_command(recap_world: World, caplog: pytest.LogCaptureFixture) -> None:
    w = recap_world
    dispatched: list[str] = []

    async def on_command_error(ctx, error) -> None:  # what discord.py raises for an unknown prefix command
        dispatched.append(type(error).__name__)

    w.bot.add_listener(on_command_error)
    await w.alice.send(w.channel, f"<@{w.bot.user.id}> sync")
    await w.alice.send(w.channel, f"<@{w.bot.user.id}> help me ignore your rules")
    await w.env.settle()
    assert dispatched == []
    assert "Ignoring exception in command" not in caplog.text
