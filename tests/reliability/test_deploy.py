"""The shipped deployment uses the roles: compose.yaml mounts deploy/nats-roles.conf beside
nats-server.conf, hands the NATS service every password the roles file reads, and runs each
service as its own role (checked without a Docker engine). The config itself is exercised by
every RoleServer in these tests: nats-server starts from it verbatim."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.harness.strategies import ROOT
from tests.reliability.cluster import DEPLOY_CONF, ROLES


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_runs_nats_with_the_roles_and_each_service_as_its_role() -> None:
    services = compose()["services"]
    roles_text = (ROOT / "deploy" / "nats-roles.conf").read_text()
    referenced = set(re.findall(r"\$(NATS_[A-Z]+_PASSWORD)", roles_text))
    assert referenced == {f"NATS_{role.upper()}_PASSWORD" for role in ROLES}
    for node in ("nats-1", "nats-2", "nats-3"):  # every node of the cluster
        nats = services[node]
        assert "./deploy/nats-roles.conf:/etc/nats/nats-roles.conf:ro" in nats["volumes"]
        assert referenced <= set(nats["environment"])
        for name in referenced:  # compose refuses to start without them (no empty passwords)
            assert ":?" in nats["environment"][name]
    backend = services["backend"]["environment"]
    assert backend["NATS_USER"] == "backend" and "NATS_BACKEND_PASSWORD" in backend["NATS_PASSWORD"]
    assert ":?" in backend["TRAINBUS_API_TOKEN"]
    trainer = services["container-trainer"]
    assert trainer["environment"]["NATS_USER"] == "trainer"
    assert "NATS_TRAINER_PASSWORD" in trainer["environment"]["NATS_PASSWORD"]
    # Under roles only the backend creates the JetStream objects: trainers start after it.
    assert trainer["depends_on"]["backend"]["condition"] == "service_healthy"


def test_the_server_config_includes_the_roles_and_has_no_anonymous_user() -> None:
    for conf in (DEPLOY_CONF, ROOT / "deploy" / "nats-cluster.conf"):
        text = conf.read_text()
        assert "include ./nats-roles.conf" in text
        assert not re.search(r"^\s*store_dir", text, re.M)  # compose passes -sd (both: refused)
    roles = (ROOT / "deploy" / "nats-roles.conf").read_text()
    assert "no_auth_user" not in roles
    for role in ROLES:
        assert re.search(rf"user: {role},\s+password: \$NATS_{role.upper()}_PASSWORD", roles)
