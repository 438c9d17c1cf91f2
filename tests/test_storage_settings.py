"""Settings: built-in defaults, server values, channel overrides, validation, reset."""

from __future__ import annotations

import dataclasses

import pytest

from bot import tunables
from storage import InvalidSetting, settings
from storage.settings import SPECS, defaults
from test_storage_helpers import CHANNEL, GUILD, OTHER_CHANNEL, OTHER_GUILD, db, db_path  # noqa: F401

EXPECTED_DEFAULTS = {
    "length": "medium", "max_new_tokens": 0, "temperature": 0.7, "top_p": 0.9, "top_k": 50,
    "repetition_penalty": 1.0, "sampling": False, "default_window": 100, "max_messages": 1000,
    "style": "paragraph", "private_default": False, "retention_days": 30, "enabled": True,
}


def test_every_builtin_default_is_declared_once_and_valid() -> None:
    assert defaults() == EXPECTED_DEFAULTS
    assert list(SPECS.values()) == list(tunables.SETTINGS)  # the store holds the application's declarations
    for name, spec in SPECS.items():
        assert spec.parse(spec.default) == spec.default, name
        assert spec.help


def test_a_setting_is_registered_once() -> None:
    settings.register(SPECS["temperature"])  # the same declaration again: a no-op
    clash = dataclasses.replace(SPECS["temperature"], default=0.5)
    with pytest.raises(ValueError, match="already registered"):
        settings.register(clash)
    assert SPECS["temperature"].default == 0.7


async def test_unset_values_come_from_the_defaults(db) -> None:
    resolved = await db.reading(settings.get_settings, GUILD, CHANNEL)
    assert resolved.values == EXPECTED_DEFAULTS
    assert set(resolved.sources.values()) == {"default"}


async def test_channel_overrides_server_which_overrides_default(db) -> None:
    await db.writing(settings.set_setting, GUILD, "temperature", 1.2)
    await db.writing(settings.set_setting, GUILD, "temperature", 0.3, CHANNEL)
    await db.writing(settings.set_setting, GUILD, "style", "bullets")
    in_channel = await db.reading(settings.get_settings, GUILD, CHANNEL)
    elsewhere = await db.reading(settings.get_settings, GUILD, OTHER_CHANNEL)
    assert (in_channel["temperature"], in_channel.source("temperature")) == (0.3, "channel")
    assert (in_channel["style"], in_channel.source("style")) == ("bullets", "server")
    assert (elsewhere["temperature"], elsewhere.source("temperature")) == (1.2, "server")
    assert (in_channel["top_k"], in_channel.source("top_k")) == (50, "default")


async def test_settings_are_per_server(db) -> None:
    await db.writing(settings.set_setting, GUILD, "length", "long")
    other = await db.reading(settings.get_setting, OTHER_GUILD, "length")
    assert (other.value, other.source) == ("medium", "default")


async def test_values_keep_their_types(db) -> None:
    await db.writing(settings.set_setting, GUILD, "sampling", "yes")
    await db.writing(settings.set_setting, GUILD, "top_k", "0")
    await db.writing(settings.set_setting, GUILD, "repetition_penalty", "1.5")
    resolved = await db.reading(settings.get_settings, GUILD)
    assert resolved["sampling"] is True
    assert resolved["top_k"] == 0 and type(resolved["top_k"]) is int
    assert resolved["repetition_penalty"] == 1.5


@pytest.mark.parametrize(
    "name, value, allowed",
    [
        ("temperature", 0.01, "0.05 to 2"),
        ("temperature", "warm", "0.05 to 2"),
        ("temperature", float("nan"), "0.05 to 2"),
        ("max_new_tokens", 8, "0 (from the length preset) or 16 to 1024"),
        ("max_new_tokens", 2000, "0 (from the length preset) or 16 to 1024"),
        ("top_k", 2.5, "0 to 500"),
        ("default_window", True, "1 to 1000"),
        ("max_messages", 0, "1 to 5000"),
        ("length", "huge", "short, medium, long"),
        ("style", "poem", "paragraph, bullets, topics, action_items, key_messages"),
        ("sampling", "maybe", "true or false"),
        ("retention_days", 3651, "0 to 3650"),
    ],
)
async def test_bad_values_are_refused_with_the_allowed_values(db, name, value, allowed) -> None:
    with pytest.raises(InvalidSetting) as info:
        await db.writing(settings.set_setting, GUILD, name, value)
    assert f"(allowed: {allowed})" in str(info.value) and info.value.name == name
    assert (await db.reading(settings.get_setting, GUILD, name)).source == "default"


async def test_unknown_setting_names_the_known_ones(db) -> None:
    with pytest.raises(InvalidSetting, match="There is no setting called 'colour'.*temperature"):
        await db.writing(settings.set_setting, GUILD, "colour", "red")


async def test_retention_is_server_wide_only(db) -> None:
    with pytest.raises(InvalidSetting, match="server-wide"):
        await db.writing(settings.set_setting, GUILD, "retention_days", 7, CHANNEL)


async def test_zero_max_new_tokens_means_the_length_preset(db) -> None:
    assert await db.writing(settings.set_setting, GUILD, "max_new_tokens", 0) == 0
    assert await db.writing(settings.set_setting, GUILD, "max_new_tokens", 16) == 16


async def test_reset_one_setting_of_one_scope(db) -> None:
    await db.writing(settings.set_setting, GUILD, "top_p", 0.5)
    await db.writing(settings.set_setting, GUILD, "top_p", 0.6, CHANNEL)
    assert await db.writing(settings.reset_setting, GUILD, "top_p", CHANNEL) == 1
    got = await db.reading(settings.get_setting, GUILD, "top_p", CHANNEL)
    assert (got.value, got.source) == (0.5, "server")


async def test_reset_all_of_a_scope(db) -> None:
    await db.writing(settings.set_setting, GUILD, "top_p", 0.5)
    await db.writing(settings.set_setting, GUILD, "length", "short")
    await db.writing(settings.set_setting, GUILD, "length", "long", CHANNEL)
    assert await db.writing(settings.reset_setting, GUILD) == 2
    assert await db.reading(settings.list_overrides, GUILD) == {CHANNEL: {"length": "long"}}


async def test_list_overrides_by_scope(db) -> None:
    await db.writing(settings.set_setting, GUILD, "enabled", False)
    await db.writing(settings.set_setting, GUILD, "style", "topics", CHANNEL)
    assert await db.reading(settings.list_overrides, GUILD) == {0: {"enabled": False}, CHANNEL: {"style": "topics"}}


async def test_a_corrupt_stored_value_falls_back(db) -> None:
    async with db.write() as conn:
        await conn.execute(
            "INSERT INTO settings (guild_id, channel_id, name, value, updated_at) VALUES (?, 0, 'temperature', '99', 0)",
            (GUILD,),
        )
    got = await db.reading(settings.get_setting, GUILD, "temperature")
    assert (got.value, got.source) == (0.7, "default")


def test_validate_setting_needs_no_database() -> None:
    assert settings.validate_setting("style", " Bullets ") == "bullets"
    with pytest.raises(InvalidSetting):
        settings.validate_setting("top_p", 1.5)
