"""Shared by every test folder: the real nats-server fixtures, the anyio backend, and the fast
lane (`-m "not slow"`): every test that starts a real nats-server is `slow` by that alone."""

import pytest

pytest_plugins = ["tests.harness.fixtures"]

_SERVER_FIXTURES = frozenset({"nats_server", "nats_server_module", "cluster"})


@pytest.fixture
def anyio_backend() -> str:
    # trainbus is asyncio (nats-py); run async tests on asyncio only.
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
