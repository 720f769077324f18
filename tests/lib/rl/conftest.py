"""In-process training and simulation use LAB_THREADS torch threads, as `lab` does: two threads on the
shared 2-core machine oversubscribe it and made these tests several times slower (the DQN test 20x)."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def lab_threads():
    torch.set_num_threads(max(1, int(os.environ.get("LAB_THREADS", "1"))))
