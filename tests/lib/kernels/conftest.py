"""Kernel tests use LAB_THREADS torch threads, as `lab` does: two threads on a shared two-core machine made
every small op ~30x slower (OpenMP spinning against other processes)."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def lab_threads():
    torch.set_num_threads(max(1, int(os.environ.get("LAB_THREADS", "1"))))
