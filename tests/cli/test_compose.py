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


NODES = ("nats-1", "nats-2", "nats-3")


def test_services_commands_and_health_checks() -> None:
    services = compose()["services"]
    assert set(services) == {*NODES, "backend", "container-trainer"}
    for node in NODES:
        nats = services[node]
        assert nats["image"].startswith("nats:2.10")
        command = nats["command"]
        assert "-js" in command and command[command.index("-sd") + 1] == "/data"
        assert command[command.index("-c") + 1] == "/etc/nats/nats-cluster.conf"
        assert "8222/healthz" in " ".join(nats["healthcheck"]["test"])
        assert nats["environment"]["NATS_SERVER_NAME"] == node
        # the route port stays inside compose's network: nobody outside joins as a node
        assert not any("6222" in str(port) for port in nats.get("ports", []))
    assert "4222:4222" in services["nats-1"]["ports"]  # the host trainer connects from outside
    assert services["backend"]["command"] == ["trainbus", "backend"]
    assert services["container-trainer"]["command"] == ["trainbus", "container-trainer"]
    for name in ("backend", "container-trainer"):
        for node in NODES:
            assert services[name]["depends_on"][node]["condition"] == "service_healthy"
        assert "healthcheck" in services[name]
    # Scalable with --scale: no fixed container name, no published port.
    trainer = services["container-trainer"]
    assert "container_name" not in trainer and "ports" not in trainer
    assert "8000:8000" in services["backend"]["ports"]


def test_the_cluster_config_is_valid_for_nats_server(tmp_path: Path) -> None:
    """`nats-server -t` (test the configuration and exit) on the shipped cluster config, with
    the roles file beside it and the variables compose passes."""
    import shutil
    import subprocess

    from tests.harness.nats_server import find_nats_server

    for name in ("nats-cluster.conf", "nats-roles.conf"):
        shutil.copy(ROOT / "deploy" / name, tmp_path / name)
    env = {f"NATS_{role}_PASSWORD": f"p{role.lower()}1" for role in
           ("ADMIN", "BACKEND", "TRAINER", "CLIENT", "AUDITOR", "PREDICTOR")}
    checked = subprocess.run([find_nats_server(), "-t", "-c", "nats-cluster.conf"],
                             cwd=tmp_path, env={**env, "NATS_SERVER_NAME": "nats-1"},
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and "is valid" in checked.stdout + checked.stderr, (
        checked.stdout + checked.stderr)
    text = (ROOT / "deploy" / "nats-cluster.conf").read_text()
    assert "sync_interval: always" in text
    assert all(f"nats-route://{node}:6222" in text for node in NODES)


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
        assert env["NATS_URL"] == ",".join(f"nats://{node}:4222" for node in NODES)
        assert env["TRAINBUS_REPLICAS"] == "${TRAINBUS_REPLICAS:-3}" or env[
            "TRAINBUS_REPLICAS"] == "3"
        for var in ("TRAINBUS_DATA_DIR", "TRAINBUS_STRATEGIES_DIR", "TRAINBUS_MODELS_DIR",
                    "TRAINBUS_SUBJECT_PREFIX", "TRAINBUS_STREAM_MAX_AGE",
                    "TRAINBUS_STREAM_MAX_BYTES"):
            assert var in env, (name, var)
    backend = services["backend"]["environment"]
    assert backend["TRAINBUS_API_HOST"] == "0.0.0.0"
    assert "USE_TRAINING_HOST_SERVICE" in backend
    assert set(doc["volumes"]) == {*NODES, "models", "trainer-state"}
    for node in NODES:
        volumes = services[node]["volumes"]
        assert f"{node}:/data" in volumes
        assert "./deploy/nats-cluster.conf:/etc/nats/nats-cluster.conf:ro" in volumes
        assert "./deploy/nats-roles.conf:/etc/nats/nats-roles.conf:ro" in volumes
    # The backend and the trainers share the models volume (archives served from disk).
    for name in ("backend", "container-trainer"):
        assert "models:/var/lib/trainbus/models" in services[name]["volumes"]


def test_every_variable_compose_sets_is_documented() -> None:
    documented = (ROOT / "docs" / "configuration.md").read_text()
    for service in compose()["services"].values():
        for var in service.get("environment", {}):
            assert f"`{var}`" in documented, var
