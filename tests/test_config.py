"""Config: defaults, validation with one clear line, the token never shown."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import FIELDS, ConfigError, Config, env_example

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_parse() -> None:
    s = Config.from_env({})
    assert s.model == "embedded"
    assert s.device == "auto"
    assert s.database_path == Path("data/recap.sqlite3")
    assert s.dev_guild_id is None
    assert s.log_level == "INFO"
    assert not s.discord_token


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("DEVICE", "gpu0", "allowed: auto, cpu, cuda, cuda:N, mps"),
        ("MAX_BATCH_SIZE", "-1", "allowed: 1 to 256"),
        ("MAX_BATCH_SIZE", "many", "not a whole number"),
        ("LOG_LEVEL", "loud", "allowed: DEBUG"),
        ("DEV_GUILD_ID", "abc", "not a Discord id"),
        ("REQUEST_TIMEOUT_S", "nan", "is not a number"),
        ("REQUEST_TIMEOUT_S", "inf", "is not a number"),
        ("DTYPE", "int8", "allowed: auto, float32"),
    ],
)
def test_bad_value_names_variable_and_allowed(env: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        Config.from_env({env: value})
    message = str(err.value)
    assert message.startswith(f"{env}=")
    assert needle in message
    assert "\n" not in message


def test_explicit_values() -> None:
    s = Config.from_env({"DEVICE": "CUDA:1", "DEV_GUILD_ID": "123456789012345678", "OWNER_IDS": "1, 2,3", "LOG_LEVEL": "debug"})
    assert s.device == "cuda:1"
    assert s.dev_guild_id == 123456789012345678
    assert s.owner_ids == (1, 2, 3)
    assert s.log_level == "DEBUG"


def test_token_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    token = "MTIzNDU2.secret-token-value.xyz"
    s = Config.from_env({"DISCORD_TOKEN": token})
    assert s.discord_token.get() == token
    assert token not in repr(s)
    assert token not in str(s)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s %r", s, s.discord_token)
    assert token not in caplog.text


def test_dotenv_file_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MODEL=/models/x\nMAX_QUEUE=7\n")
    monkeypatch.setenv("MAX_QUEUE", "9")
    s = Config.load(env_file)
    assert s.model == "/models/x"
    assert s.max_queue == 9


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), ".env.example is stale: regenerate it from bot.config.env_example()"
    for spec in FIELDS.values():
        assert f"\n{spec.env}={spec.default}\n" in text
    for required in ("DISCORD_TOKEN", "DATABASE_PATH", "MODEL", "DEVICE", "DEV_GUILD_ID", "LOG_LEVEL"):
        assert f"{required}=" in text


def test_cli_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "--env-file", str(tmp_path / "none"), "db", "stats"],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", "DEVICE": "gpu0", "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Configuration error: DEVICE='gpu0' is not allowed (allowed: auto, cpu, cuda, cuda:N, mps)"


def test_database_url_wins_and_never_prints_its_password() -> None:
    url = "postgresql://recap:hunter2@db.internal:5432/recap"
    both = Config.from_env({"DATABASE_URL": url, "DATABASE_PATH": "data/x.sqlite3"})
    assert both.database_target == url and both.database_path_set
    assert "hunter2" not in repr(both)
    path_only = Config.from_env({})
    assert path_only.database_target == "data/recap.sqlite3" and not path_only.database_path_set
    assert Config.from_env({"DATABASE_URL": "sqlite:///data/y.sqlite3"}).database_target == "sqlite:///data/y.sqlite3"


def test_a_database_url_of_another_kind_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"DATABASE_URL": "mysql://root:hunter2@localhost/recap"})
    assert "DATABASE_URL" in str(caught.value) and "hunter2" not in str(caught.value)
