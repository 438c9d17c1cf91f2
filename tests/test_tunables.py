"""Each tunable setting is declared once and that declaration is what every entry point offers and checks.

The same declaration (``engine.tunables``, ``engine.prompts.LENGTH``/``STYLE``, ``bot.tunables``) gives
the stored settings, the ``/settings set`` options, the ``/summarize`` and ``/digest`` choices, the
command-line flags and the engine's check: a range changed in one place changes all of them.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest

from bot import tunables
from bot.cli_common import generation_from_args
from bot.cli_summarize import add_arguments
from cogs.digests import DigestsCog
from cogs.settings import SettingsCog
from cogs.summarize import Summarize
from engine.generation import GenerationSettings, InvalidRequest
from engine.prompts import LENGTH, LENGTHS, STYLE, STYLES, generation_for
from engine.tunables import GENERATION_TUNABLES, MAX_NEW_TOKENS, TEMPERATURE, InvalidTunable, Tunable
from storage import InvalidSetting
from storage import settings as store


def options_of(command) -> dict:
    return {p.name: p for p in command.parameters}


def test_the_store_holds_exactly_the_declarations_once() -> None:
    names = [t.name for t in tunables.SETTINGS]
    assert len(names) == len(set(names))
    assert all(store.SPECS[t.name] is t for t in tunables.SETTINGS)
    assert set(store.SPECS) == set(names)
    assert {t.name for t in GENERATION_TUNABLES} | {"length", "style"} <= set(names)


def test_settings_set_offers_every_declared_setting_with_its_help_text() -> None:
    options = options_of(SettingsCog.set_)
    declared = {t.name: t for t in tunables.SETTINGS}
    assert set(options) - {"scope", "channel"} == set(declared)
    for name, tunable in declared.items():
        assert options[name].description == tunable.help, name
        assert not options[name].required
    assert [c.value for c in options["length"].choices] == list(LENGTHS)
    assert [c.value for c in options["style"].choices] == list(STYLES)
    reset = options_of(SettingsCog.reset)["setting"]
    assert [c.value for c in reset.choices] == ["all", *declared]


@pytest.mark.parametrize("command", [Summarize.summarize, DigestsCog.digest_set])
def test_length_and_style_choices_are_the_engine_presets(command) -> None:
    options = options_of(command)
    assert [c.value for c in options["length"].choices] == list(LENGTH.choices)
    assert [c.value for c in options["style"].choices] == list(STYLE.choices)


def parse_cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["chat.txt", *argv])


def test_cli_has_one_flag_per_generation_setting_and_their_defaults() -> None:
    args = parse_cli()
    assert all(getattr(args, t.name) is None for t in GENERATION_TUNABLES)  # unset: the declared default
    assert generation_from_args(args, args.length) == generation_for(LENGTH.default)
    assert (args.length, args.style) == (LENGTH.default, STYLE.default)
    tuned = generation_from_args(parse_cli("--temperature", "0.3", "--sample", "--top-k", "0", "--max-new-tokens", "0"),
                                 "short")
    assert (tuned.temperature, tuned.sampling, tuned.top_k) == (0.3, True, 0)
    assert tuned.max_new_tokens == LENGTHS["short"].max_new_tokens  # 0: the preset's


@pytest.mark.parametrize(("flag", "value"), [("--temperature", "9"), ("--max-new-tokens", "8"), ("--top-p", "x")])
def test_cli_flags_and_settings_refuse_the_same_values_with_the_same_words(flag, value, capsys) -> None:
    with pytest.raises(SystemExit):
        parse_cli(flag, value)
    cli_error = capsys.readouterr().err.strip().splitlines()[-1]
    name = flag[2:].replace("-", "_")
    with pytest.raises(InvalidSetting) as stored:
        store.validate_setting(name, value)
    assert cli_error.endswith(f"argument {flag}: {stored.value}")


def test_the_engine_checks_what_reaches_the_model_by_the_same_rule() -> None:
    with pytest.raises(InvalidRequest) as engine_error:
        GenerationSettings(temperature=9.0)
    with pytest.raises(InvalidSetting) as stored:
        store.validate_setting("temperature", 9.0)
    assert str(engine_error.value) == str(stored.value)
    with pytest.raises(InvalidRequest):
        GenerationSettings(top_k=2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        GenerationSettings(max_new_tokens=int(MAX_NEW_TOKENS.maximum) + 1)
    assert GenerationSettings(max_new_tokens=4).max_new_tokens == 4  # internal requests may be shorter than admins'


def test_a_tunable_parses_text_and_checks_types() -> None:
    assert TEMPERATURE.parse(" 0.3 ") == 0.3 and TEMPERATURE.parse(1) == 1.0
    assert MAX_NEW_TOKENS.parse("0") == 0 and MAX_NEW_TOKENS.parse(16.0) == 16
    assert tunables.ENABLED.parse("Off") is False and STYLE.parse(" Bullets ") == "bullets"
    for bad in ("nan", "inf", True, None, "1e999"):
        with pytest.raises(InvalidTunable):
            TEMPERATURE.parse(bad)
    with pytest.raises(InvalidTunable, match=r"allowed: 0 \(from the length preset\) or 16 to 1024"):
        MAX_NEW_TOKENS.parse(15)
    with pytest.raises(InvalidTunable):
        STYLE.check(" Bullets ")  # check: already typed and exact
    with pytest.raises(InvalidTunable):
        tunables.ENABLED.check("true")


def test_a_declaration_bug_fails_at_import_time() -> None:
    with pytest.raises(InvalidTunable):
        replace(TEMPERATURE, default=5.0)
    with pytest.raises(ValueError, match="100 characters"):
        Tunable("x", bool, False, "y" * 101)


def test_importing_the_app_registers_nothing_by_itself() -> None:
    """Settings are declared by an explicit call at start (bot.__main__, RecapBot), not as an import's side effect."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import bot, bot.config, bot.tunables, cogs.settings, core.flow\n"
            "from storage.settings import SPECS\nassert not SPECS, list(SPECS)\n"
            "bot.tunables.register_settings()\nassert 'temperature' in SPECS and 'retention_days' in SPECS\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
