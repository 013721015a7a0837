"""The Dockerfile, scripts/install.sh and fly.toml, checked against the code they run."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from app.cli.main import COMMANDS, build_parser
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"REDIS_URL", "DISCORD_APPLICATION_ID", "DISCORD_PUBLIC_KEY", "DISCORD_BOT_TOKEN"}


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, continuation lines joined, split by FROM."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    result: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            result.append([])
        result[-1].append((keyword.upper(), rest.strip()))
    return result


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                found[key] = value
    return found


def test_the_image_is_multi_stage_with_a_compiler_only_in_the_builder() -> None:
    builder, runtime = stages()
    assert builder[0] == ("FROM", "python:3.11-slim AS builder")
    assert runtime[0] == ("FROM", "python:3.11-slim AS runtime")
    runs = " ".join(rest for keyword, rest in builder if keyword == "RUN")
    assert "build-essential" in runs and "cmake" in runs
    assert "sh scripts/install.sh" in runs
    runtime_runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert not re.search(r"build-essential|gcc|g\+\+|cmake|clang", runtime_runs)
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert all(c.startswith("--from=builder /opt/") for c in copies)


def test_the_runtime_runs_as_a_user_with_state_only_in_data_dir() -> None:
    _, runtime = stages()
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = env_of(runtime)
    assert env["DATA_DIR"] == "/data" and env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert ("VOLUME", '["/data"]') in runtime
    assert not SECRETS & set(env)


def test_ports_and_commands_match_the_code() -> None:
    _, runtime = stages()
    env = env_of(runtime)
    defaults = Settings.from_env({})
    assert int(env["PORT"]) == defaults.port
    assert int(env["METRICS_PORT"]) == defaults.metrics_port
    exposed = next(rest for keyword, rest in runtime if keyword == "EXPOSE").split()
    assert exposed == [str(defaults.port), str(defaults.metrics_port)]
    entry = next(rest for keyword, rest in runtime if keyword == "ENTRYPOINT")
    assert entry == '["python", "-m", "app"]'
    cmd = next(rest for keyword, rest in runtime if keyword == "CMD")
    assert cmd == '["web"]' and "web" in COMMANDS and "worker" in COMMANDS
    check = next(rest for keyword, rest in runtime if keyword == "HEALTHCHECK")
    assert check.endswith('CMD ["python", "-m", "health"]')


def test_model_path_is_where_install_assembles_the_default_model() -> None:
    from app.llm.model_file import DEFAULT_MODEL

    builder, runtime = stages()
    home = env_of(builder)["MODEL_HOME"]
    expected = f"{home}/.cache/discord-history-assistant/{DEFAULT_MODEL.name}"
    assert env_of(runtime)["MODEL_PATH"] == expected
    assert env_of(runtime)["MODEL_CACHE_DIR"] == env_of(builder)["MODEL_CACHE_DIR"]


def test_install_script_dry_run_prints_every_step(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", "scripts/install.sh", "--dry-run"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHON": "python3", "VENV": str(tmp_path / "venv")},
        capture_output=True,
        text=True,
        check=True,
    )
    steps = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(d for d in pins if d.startswith("torch=="))
    assert steps[0] == f"python3 -m venv {tmp_path / 'venv'}"
    assert any(s.endswith(f"pip install --no-cache-dir {torch}") for s in steps)
    assert any(s.endswith("pip install --no-cache-dir .") for s in steps)
    assert any("-m app prepare-model" in s and "-u MODEL_PATH" in s for s in steps)
    assert (
        "Embedder(default_model_dir(), cache_dir=Path('/opt/models/embedder'), backend='onnx')"
        in result.stdout
    )
    assert not (tmp_path / "venv").exists()
    assert "prepare-model" in COMMANDS


def test_fly_toml_runs_both_groups_from_one_image() -> None:
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    commands = fly["processes"]
    assert commands == {"web": "web", "worker": "worker"}
    parser = build_parser()
    for command in commands.values():
        assert parser.parse_args(command.split()).command in COMMANDS
    service = fly["http_service"]
    assert service["processes"] == ["web"]
    assert service["internal_port"] == Settings.from_env(fly["env"]).port
    assert service["min_machines_running"] == 0 and service["auto_start_machines"] is True
    assert service["checks"][0]["path"] == "/health"
    (mount,) = fly["mounts"]
    assert mount["processes"] == ["worker"]
    assert mount["destination"] == fly["env"]["DATA_DIR"]
    sizes = {vm["processes"][0]: vm for vm in fly["vm"]}
    assert sizes["worker"]["memory"] == "8gb"
    assert set(sizes) == {"web", "worker"}
    assert not SECRETS & set(fly["env"])
    worker_metrics = next(m for m in fly["metrics"] if m["processes"] == ["worker"])
    assert worker_metrics["port"] == Settings.from_env(fly["env"]).metrics_port


def test_dockerignore_keeps_secrets_and_state_out_of_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", "data", ".git"} <= set(ignored)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml with `${VAR:?...}` and `${VAR:-default}` filled in from `env`."""
    values = env or {}

    def fill(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if name in values:
            return values[name]
        assert kind == ":-", f"compose.yaml needs {name}: {rest}"
        return rest

    text = re.sub(r"\$\{(\w+)(:[?-])([^}]*)\}", fill, (ROOT / "compose.yaml").read_text())
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def test_compose_runs_web_and_workers_from_the_image_on_shared_engines() -> None:
    services = compose({"POSTGRES_PASSWORD": "s3cret"})["services"]
    assert set(services) == {"web", "worker", "redis", "postgres", "chroma"}
    parser = build_parser()
    for name in ("web", "worker"):
        service = services[name]
        assert service["build"] == "."
        (command,) = service["command"]
        assert parser.parse_args([command]).command in COMMANDS
        assert command == name
        env = {k: str(v) for k, v in service["environment"].items()}
        settings = Settings.from_env(env)
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.database_url == "postgresql://assistant:s3cret@postgres:5432/assistant"
        assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
        assert settings.chroma_url == "http://chroma:8000"
        assert not SECRETS - {"REDIS_URL"} & set(env), "secrets come from .env"
        assert service["deploy"]["replicas"] >= 2
    assert services["worker"]["environment"]["LLM_THREADS"] == "1"
    # The Chroma server is the application's own chromadb, serving the port CHROMA_URL names.
    chroma = services["chroma"]
    assert chroma["image"] == services["web"]["image"]
    assert chroma["entrypoint"][:2] == ["chroma", "run"]
    assert chroma["entrypoint"][chroma["entrypoint"].index("--port") + 1] == "8000"
    assert services["worker"]["depends_on"].keys() == {"redis", "postgres", "chroma"}
    assert all(
        d["condition"] == "service_healthy" for d in services["worker"]["depends_on"].values()
    )


def test_compose_containers_are_locked_down_and_the_engines_unreachable_from_outside() -> None:
    spec = compose({"POSTGRES_PASSWORD": "s3cret"})
    services = spec["services"]
    assert spec["networks"]["backend"]["internal"] is True
    for name, service in services.items():
        assert service["read_only"] is True, name
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and limits["memory"].endswith(("M", "G")), name
        assert service["healthcheck"]["test"][0] == "CMD", name
        # Our image runs as its own non-root user; the engines are told theirs.
        if service.get("image", "").startswith("discord-history-assistant"):
            assert "user" not in service, name
        else:
            assert service["user"] not in ("root", "0"), name
    for name in ("redis", "postgres", "chroma"):
        assert services[name]["networks"] == ["backend"], name
        assert "ports" not in services[name], name
    for name in ("web", "worker"):
        assert set(services[name]["networks"]) == {"backend", "default"}
    assert "ports" not in services["worker"]
    # The health checks of our containers are the ones the image's HEALTHCHECK uses.
    web_probe = services["web"]["healthcheck"]["test"]
    assert web_probe[1:4] == ["python", "-m", "health"]
    assert web_probe[4].endswith(":8080/health/live")
    worker_probe = services["worker"]["healthcheck"]["test"]
    port = Settings.from_env({}).metrics_port
    assert worker_probe[4] == f"http://127.0.0.1:{port}/metrics"
