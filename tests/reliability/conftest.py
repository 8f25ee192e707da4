"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.trainers import one_torch_thread


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Reference runs in the test process train on one intra-op thread: the trainers under
    test are processes of their own."""
    with one_torch_thread():
        yield
