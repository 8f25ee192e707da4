"""The role permissions have one source (libs/events/roles.py): the shipped
deploy/nats-roles.conf is its rendering, another prefix gets its own names, and the embedded
server's nkey config made from a secured `up`'s credentials starts a real nats-server that
refuses anonymous clients and lets each role in. The permissions themselves are proven on a real
server by tests/reliability/test_roles.py (which reads the shipped file)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nats
import nats.errors
import pytest

from libs.events.credentials import (
    CredentialsError,
    ensure_credentials,
    local_credentials,
    public_key,
)
from libs.events.embedded import EmbeddedNatsServer
from libs.events.roles import (
    ROLES,
    main,
    render_deploy,
    render_nkeys,
    roles,
    roles_that_may_publish,
    subject_matches,
)
from libs.events.subjects import Names
from tests.harness.strategies import ROOT


def test_the_shipped_roles_file_is_the_rendering(capsys: pytest.CaptureFixture[str]) -> None:
    shipped = (ROOT / "deploy" / "nats-roles.conf").read_text()
    assert shipped == render_deploy(), (
        "deploy/nats-roles.conf is out of date: python -m libs.events.roles > "
        "deploy/nats-roles.conf")
    assert main([]) == 0
    assert capsys.readouterr().out == shipped


def test_another_prefix_gets_its_own_names_everywhere() -> None:
    text = render_deploy(Names("acme"))
    body = text[text.index("authorization {"):]
    config = "\n".join(line for line in body.splitlines() if not line.strip().startswith("#"))
    # (`trainbus-predictor` is the service's name, the same under every prefix)
    assert "trainbus" not in config.replace("trainbus-predictor", "")
    for name in ("ACME", "KV_acme_jobs", "KV_acme_trusted_workers", "acme.evt.*.*",
                 "$JS.API.CONSUMER.DURABLE.CREATE.ACME.pool-any"):
        assert name in body


def test_who_may_publish_what() -> None:
    assert subject_matches("a.*.c", "a.b.c") and not subject_matches("a.*", "a.b.c")
    assert subject_matches("a.>", "a.b.c") and not subject_matches("a.>", "a")
    # A forged `completed`: only the trainer (and the operator); job state: the backend.
    assert roles_that_may_publish("trainbus.evt.j1.completed") == ["admin", "trainer"]
    assert roles_that_may_publish("trainbus.evt.j1.operator_failed") == ["admin", "backend"]
    assert roles_that_may_publish("$KV.trainbus_jobs.j1") == ["admin", "backend"]
    assert roles_that_may_publish("trainbus.cmd.train.any") == ["admin", "backend", "client"]
    # The trusted workers: every role reads them, only the operator writes them.
    assert roles_that_may_publish("$KV.trainbus_trusted_workers.UABC") == ["admin"]
    for role in roles():
        if not role.everything:
            assert "$JS.API.STREAM.INFO.KV_trainbus_trusted_workers" in role.allowed_publish()
    assert roles_that_may_publish("$JS.API.STREAM.DELETE.TRAINBUS") == ["admin"]


def test_credentials_are_private_made_once_and_reused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = ensure_credentials(store)
    assert stat.S_IMODE(first.folder.stat().st_mode) == 0o700
    files = sorted(first.folder.iterdir())
    assert [p.name for p in files] == sorted([*(f"{r}.nk" for r in ROLES), "api-token"])
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    contents = {p.name: p.read_bytes() for p in files}
    keys = first.public_keys()
    assert len(set(keys.values())) == len(ROLES) and all(k.startswith("U") for k in keys.values())
    second = ensure_credentials(store)
    assert {p.name: p.read_bytes() for p in sorted(second.folder.iterdir())} == contents
    assert second.public_keys() == keys
    config = first.write_server_config(Names())
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert all(f"nkey: {key}" in config.read_text() for key in keys.values())
    assert local_credentials({"TRAINBUS_STORE": str(store)}) == first
    assert local_credentials({"TRAINBUS_STORE": str(tmp_path / "none")}) is None


def test_a_readable_seed_or_folder_is_refused_naming_it(tmp_path: Path) -> None:
    creds = ensure_credentials(tmp_path)
    seed = creds.seed_file("client")
    os.chmod(seed, 0o644)
    with pytest.raises(CredentialsError, match=r"client\.nk is readable by other users"):
        ensure_credentials(tmp_path)
    os.chmod(seed, 0o600)
    os.chmod(creds.folder, 0o755)
    with pytest.raises(CredentialsError, match=r"credentials is readable .* must be 0700"):
        ensure_credentials(tmp_path)
    os.chmod(creds.folder, 0o700)
    seed.write_bytes(b"not a seed\n")
    with pytest.raises(CredentialsError, match=r"client\.nk: not an nkey seed"):
        ensure_credentials(tmp_path)
    with pytest.raises(CredentialsError):
        public_key(b"SUnotaseed")
    with pytest.raises(ValueError, match="not a user nkey"):
        render_nkeys(Names(), {role: "Sxyz" for role in ROLES})


@pytest.mark.anyio
async def test_the_embedded_server_with_the_nkey_config_refuses_anonymous(
    tmp_path: Path,
) -> None:
    creds = ensure_credentials(tmp_path)
    server = EmbeddedNatsServer(tmp_path / "nats", config_file=creds.write_server_config(Names()),
                                probe_seed=creds.seed_file("backend"))
    async with server:
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
            await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0,
                               connect_timeout=3)
        for role in ROLES:
            nc = await nats.connect(server.url, nkeys_seed=str(creds.seed_file(role)),
                                    allow_reconnect=False)
            await nc.close()
        # Someone else's seed (not in the config) is refused too.
        stranger = ensure_credentials(tmp_path / "other").seed_file("admin")
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
            await nats.connect(server.url, nkeys_seed=str(stranger), allow_reconnect=False,
                               max_reconnect_attempts=0, connect_timeout=3)
