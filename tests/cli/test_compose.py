"""compose.yaml and the Dockerfile, checked without a Docker engine: the services, their
commands, environment and volumes, and that every `trainbus <command>` they run exists."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from services.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def cli_commands() -> set[str]:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(subparsers.choices)


def test_services_commands_and_health_checks() -> None:
    services = compose()["services"]
    assert set(services) == {"nats", "backend", "container-trainer"}
    nats = services["nats"]
    assert nats["image"].startswith("nats:2.10")
    command = nats["command"]
    assert "-js" in command and command[command.index("-sd") + 1] == "/data"
    assert command[command.index("-c") + 1] == "/etc/nats/nats-server.conf"
    assert "8222/healthz" in " ".join(nats["healthcheck"]["test"])
    assert "4222:4222" in nats["ports"]  # the host trainer connects from outside
    assert services["backend"]["command"] == ["trainbus", "backend"]
    assert services["container-trainer"]["command"] == ["trainbus", "container-trainer"]
    for name in ("backend", "container-trainer"):
        assert services[name]["depends_on"]["nats"]["condition"] == "service_healthy"
        assert "healthcheck" in services[name]
    # Scalable with --scale: no fixed container name, no published port.
    trainer = services["container-trainer"]
    assert "container_name" not in trainer and "ports" not in trainer
    assert "8000:8000" in services["backend"]["ports"]


def test_every_trainbus_command_named_exists_in_the_cli() -> None:
    known = cli_commands()
    named = []
    for service in compose()["services"].values():
        for key in ("command", "entrypoint"):
            value = service.get(key)
            if isinstance(value, list) and value and value[0] == "trainbus":
                named.append(value[1])
        test = service.get("healthcheck", {}).get("test", [])
        if "trainbus" in test:
            named.append(test[test.index("trainbus") + 1])
    assert named and set(named) <= known, set(named) - known
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["trainbus", "backend"]' in dockerfile


def test_environment_and_volumes() -> None:
    doc = compose()
    services = doc["services"]
    for name in ("backend", "container-trainer"):
        env = services[name]["environment"]
        assert env["NATS_URL"] == "nats://nats:4222"
        for var in ("TRAINBUS_DATA_DIR", "TRAINBUS_STRATEGIES_DIR", "TRAINBUS_MODELS_DIR",
                    "TRAINBUS_SUBJECT_PREFIX", "TRAINBUS_STREAM_MAX_AGE",
                    "TRAINBUS_STREAM_MAX_BYTES"):
            assert var in env, (name, var)
    backend = services["backend"]["environment"]
    assert backend["TRAINBUS_API_HOST"] == "0.0.0.0"
    assert "USE_TRAINING_HOST_SERVICE" in backend
    assert set(doc["volumes"]) == {"nats-data", "models"}
    assert "nats-data:/data" in services["nats"]["volumes"]
    config_mount = "./deploy/nats-server.conf:/etc/nats/nats-server.conf:ro"
    assert config_mount in services["nats"]["volumes"]
    assert (ROOT / "deploy" / "nats-server.conf").is_file()
    # The backend and the trainers share the models volume (archives served from disk).
    for name in ("backend", "container-trainer"):
        assert "models:/var/lib/trainbus/models" in services[name]["volumes"]


def test_every_variable_compose_sets_is_documented() -> None:
    documented = (ROOT / "docs" / "configuration.md").read_text()
    for service in compose()["services"].values():
        for var in service.get("environment", {}):
            assert f"`{var}`" in documented, var
