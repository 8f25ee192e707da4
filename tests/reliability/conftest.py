"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Reference runs in the test process train on one intra-op thread: the trainers under
    test are processes of their own, and on a 2-core machine two OpenMP threads beside them
    thrash (weights are bit-identical across thread counts, so this changes speed only)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
