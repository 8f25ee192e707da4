"""Shared by every test folder: the real nats-server fixtures, the anyio backend, and the fast
lane (`-m "not slow"`): every test that starts a real nats-server is `slow` by that alone."""

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.harness.fixtures"]

_SERVER_FIXTURES = frozenset({"nats_server", "nats_server_module", "cluster"})


@pytest.fixture(scope="session", autouse=True)
def private_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """TRAINBUS_STORE in a temporary folder for the whole session: in-process trainers make
    their signing keys there (libs/events/signing.py), and the CLI finds no developer's
    `trainbus up` credentials in the checkout (libs/events/credentials.py)."""
    before = os.environ.get("TRAINBUS_STORE")
    os.environ["TRAINBUS_STORE"] = str(tmp_path_factory.mktemp("store"))
    yield
    if before is None:
        os.environ.pop("TRAINBUS_STORE", None)
    else:
        os.environ["TRAINBUS_STORE"] = before


@pytest.fixture
def anyio_backend() -> str:
    # trainbus is asyncio (nats-py); run async tests on asyncio only.
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
