from __future__ import annotations

from pathlib import Path

import pytest

from app.cli.main import load_environment, main
from app.errors import SettingsError
from app.settings import DEFAULT_QUEUE_LIMIT, Settings

KEY = "ab" * 32


def test_defaults_follow_data_dir() -> None:
    settings = Settings.from_env({"DATA_DIR": "/srv/bot"})
    assert settings.database_url == "sqlite:////srv/bot/bot.db"
    assert settings.chroma_path == Path("/srv/bot/chroma")
    assert settings.redis_url is None
    assert settings.discord_api_base == "https://discord.com/api/v10"
    assert settings.port == 8080
    assert not settings.has_discord_credentials


def test_reads_every_documented_name() -> None:
    settings = Settings.from_env(
        {
            "DISCORD_APPLICATION_ID": "658822586720976907",
            "DISCORD_PUBLIC_KEY": KEY.upper(),
            "DISCORD_BOT_TOKEN": "secret-token-value",
            "DISCORD_API_BASE": "http://127.0.0.1:9999/api/v10/",
            "SYNC_GUILD_IDS": "1, 2,3",
            "REDIS_URL": "redis://localhost:6379/1",
            "DATABASE_URL": "postgresql://u:p@db/bot",
            "CHROMA_URL": "http://chroma:8000",
            "MODEL_PATH": "/models/m.gguf",
            "PORT": "9000",
        }
    )
    assert settings.discord_public_key == KEY
    assert settings.discord_api_base == "http://127.0.0.1:9999/api/v10"
    assert settings.sync_guild_ids == ("1", "2", "3")
    assert settings.chroma_url == "http://chroma:8000"
    assert settings.model_path == Path("/models/m.gguf")
    assert settings.port == 9000
    assert settings.missing_discord_variables() == []
    assert "secret-token-value" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DISCORD_PUBLIC_KEY", "abc"),
        ("DISCORD_PUBLIC_KEY", "zz" * 32),
        ("DISCORD_APPLICATION_ID", "my-app"),
        ("DISCORD_API_BASE", "discord.com/api"),
        ("DISCORD_API_BASE", "http://"),
        ("REDIS_URL", "localhost:6379"),
        ("REDIS_URL", "redis://host:notaport/0"),
        ("DATABASE_URL", "mysql://x/y"),
        ("CHROMA_URL", "chroma:8000"),
        ("SYNC_GUILD_IDS", "1,abc"),
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("RATE_LIMIT_PER_MINUTE", "0"),
        ("QUEUE_LIMIT", "-1"),
        ("QUEUE_LIMIT", "many"),
        ("QUEUE_LIMIT", "1.5"),
        ("REDIS_TIMEOUT", "3"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value).startswith(f"{name}:")
    assert "\n" not in str(caught.value)


def test_queue_limit_defaults_and_zero_turns_it_off() -> None:
    assert Settings.from_env({}).queue_limit == DEFAULT_QUEUE_LIMIT > 0
    assert Settings.from_env({"QUEUE_LIMIT": "0"}).queue_limit == 0
    assert Settings.from_env({"QUEUE_LIMIT": " 50 "}).queue_limit == 50


def test_cli_stops_with_one_line_naming_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["prepare-model"], environ={"DISCORD_PUBLIC_KEY": "nothex"})
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: DISCORD_PUBLIC_KEY: must be 64 hexadecimal characters"]


def test_dotenv_is_read_and_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=9001\nDATA_DIR=/from/file\n# comment\n")
    merged = load_environment({"PORT": "9002"}, dotenv)
    assert merged["PORT"] == "9002"
    assert merged["DATA_DIR"] == "/from/file"
    assert load_environment({}, tmp_path / "missing.env") == {}


def test_env_example_documents_every_variable() -> None:
    example = (Path(__file__).parents[1] / ".env.example").read_text()
    names = (
        "DISCORD_APPLICATION_ID DISCORD_PUBLIC_KEY DISCORD_BOT_TOKEN DISCORD_API_BASE "
        "SYNC_GUILD_IDS REDIS_URL DATABASE_URL CHROMA_PATH CHROMA_URL MODEL_PATH MODEL_CACHE_DIR "
        "DATA_DIR PORT "
        "HOST METRICS_PORT LOG_LEVEL LOG_FORMAT RATE_LIMIT_PER_MINUTE SIGNATURE_MAX_AGE "
        "REDIS_TIMEOUT QUEUE_LIMIT SYNC_INTERVAL SYNC_RECHECK_DAYS LLM_THREADS LLM_CONTEXT "
        "ANSWER_DEADLINE"
    )
    for name in names.split():
        assert f"{name}=" in example, name


def test_every_command_line_command_has_a_handler() -> None:
    from app.cli.main import COMMANDS, build_parser

    parser = build_parser()
    choices = next(
        a.choices for a in parser._actions if isinstance(a.choices, dict) and "run" in a.choices
    )
    assert set(choices) == set(COMMANDS)
