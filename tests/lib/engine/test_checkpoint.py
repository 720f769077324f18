"""Sharded checkpoints (torch.distributed.checkpoint) under FSDP2: 2 real gloo processes on the CPU
save their own shards, a fresh differently-initialised model resumes from them and takes exactly the
same steps as the uninterrupted run, and one process loads the 2-process checkpoint (DCP reshards).
The resumed model is built by rank-0 loading: rank 1 builds it on the meta device and receives its
shards (and the non-persistent buffers) from rank 0."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from labcli.engine import checkpoint
from labcli.errors import UserError


class Block(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear = torch.nn.Linear(width, width)

    def forward(self, x):
        return torch.tanh(self.linear(x))


class Tiny(torch.nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block(width) for _ in range(2))
        self.head = torch.nn.Linear(width, 1)
        self.register_buffer("scale", torch.full((width,), 0.5), persistent=False)  # like rotary frequencies

    def forward(self, x):
        x = x * self.scale
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def make(seed: int, strategy: str = "fsdp", meta: bool = False):
    """The model and its optimizer; `meta`: rank-0 loading (rank 0 has weights, the others none)."""
    from labcli.engine.distributed import wrap

    torch.manual_seed(seed)
    with torch.device("meta" if meta and torch.distributed.get_rank() > 0 else "cpu"):
        model = Tiny()
    model = wrap(model, strategy, torch.device("cpu"), from_rank0=meta)
    return model, torch.optim.AdamW(model.parameters(), lr=0.05)


def whole(model) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def steps(model, optimizer, first: int, last: int, rank: int) -> list[float]:
    """Steps first..last; each rank's batch is a pure function of (step, rank), the data position."""
    losses = []
    for i in range(first, last + 1):
        g = torch.Generator().manual_seed(1000 * i + rank)
        x, y = torch.randn(4, 8, generator=g), torch.randn(4, 1, generator=g)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def worker(rank: int, port: int, folder: str, out: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, optimizer = make(seed=0)
        steps(model, optimizer, 1, 2, rank)
        saved = checkpoint.save(folder, 2, model, optimizer, None, {"tokens": 7}, "seed: 0\n", keep_last=2)
        full = whole(model)
        uninterrupted = steps(model, optimizer, 3, 4, rank)
        resumed_model, resumed_optimizer = make(seed=1, meta=True)  # other weights: all must come from the checkpoint
        from_rank0 = {"weights": whole(resumed_model), "scale": resumed_model.scale.clone()}
        state = checkpoint.load(saved, resumed_model, resumed_optimizer, None)
        resumed = steps(resumed_model, resumed_optimizer, 3, 4, rank)
        out[rank] = {"uninterrupted": uninterrupted, "resumed": resumed, "state": state, "from_rank0": from_rank0,
                     "full_at_2": {k: v.clone() for k, v in full.items()} if rank == 0 else None}
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_fsdp_sharded_checkpoint_resumes_exactly_and_reshards_to_one_process(tmp_path, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(free_port(), str(tmp_path), out), nprocs=2, join=True)
        out = dict(out)
    saved = tmp_path / "step-00000002"
    assert sorted(p.name for p in (saved / "sharded").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (saved / "model.safetensors").exists() and (saved / "COMPLETE").exists()
    torch.manual_seed(1)
    reference = Tiny()  # what rank 0 built with seed 1
    for name, tensor in out[0]["from_rank0"]["weights"].items():  # gathered from both ranks' shards
        assert torch.equal(tensor, reference.state_dict()[name]), name
    assert torch.equal(out[1]["from_rank0"]["scale"], reference.scale)  # rank 1's buffer came from rank 0
    for rank in (0, 1):
        assert out[rank]["state"] == {"step": 2, "tokens": 7}
        assert out[rank]["resumed"] == pytest.approx(out[rank]["uninterrupted"], rel=1e-6, abs=1e-7)
    # One process, no process group: DCP reshards the two ranks' slices into whole tensors.
    model, optimizer = make(seed=1, strategy="single")
    assert checkpoint.load(saved, model, optimizer, None)["step"] == 2
    for name, tensor in model.state_dict().items():
        assert torch.allclose(tensor, out[0]["full_at_2"][name]), name
    assert len(optimizer.state) == len(list(model.parameters()))  # Adam's moments came back too


def test_incomplete_sharded_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / "sharded").mkdir()
    model, optimizer = make(seed=0, strategy="single")
    with pytest.raises(UserError, match=r"incomplete: sharded/.metadata missing"):
        checkpoint.load(tmp_path, model, optimizer, None)


def test_rank0_loading_needs_fsdp():
    from labcli.engine.distributed import wrap

    with torch.device("meta"):
        model = Tiny()
    with pytest.raises(UserError, match="rank-0 loading"):
        wrap(model, "single", torch.device("cpu"), from_rank0=True)
