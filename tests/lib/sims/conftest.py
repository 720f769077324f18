"""In-process runs (the tiny LM fit, simulations) with one torch thread, as `lab` runs them (LAB_THREADS=1): two
threads on the shared 2-core machine oversubscribe it and made these tests several times slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
