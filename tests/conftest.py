"""Shared by every test folder: the real nats-server fixtures and the anyio backend."""

import pytest

pytest_plugins = ["tests.harness.fixtures"]


@pytest.fixture
def anyio_backend() -> str:
    # trainbus is asyncio (nats-py); run async tests on asyncio only.
    return "asyncio"
