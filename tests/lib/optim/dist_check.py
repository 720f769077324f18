"""Run under torchrun (2 processes, gloo): lab's PagedAdamW vs torch AdamW under DDP and FSDP2.

For each strategy: 20 steps of both optimizers on identical wrapped models and data (each rank's
optimizer state is larger than the page budget, so pages go out to the page file every step), then
a paged run that checkpoints at step 10 with the engine's checkpoint module (full state dicts,
DTensor gathering under FSDP2), restarts from fresh objects and finishes. Rank 0 writes JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from labcli.engine import checkpoint, distributed
from labcli.optim import PagedAdamW

STEPS, LR, WD = 20, 1e-2, 0.1
PAGE, BUDGET = 8192, 2 * 8192  # a rank's state (74 KB under DDP, about half under FSDP2) needs 5-10 pages


class Block(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.up, self.down = torch.nn.Linear(width, 33), torch.nn.Linear(33, width)  # 33: uneven shards

    def forward(self, x):
        return x + self.down(torch.tanh(self.up(x)))


class Net(torch.nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        self.inp = torch.nn.Linear(5, width)
        self.blocks = torch.nn.ModuleList(Block(width) for _ in range(2))
        self.out = torch.nn.Linear(width, 3)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.out(h)


def batch(step: int, rank: int) -> torch.Tensor:
    return torch.randn(8, 5, generator=torch.Generator().manual_seed(1000 * step + rank))


def build(strategy: str, paged: bool):
    torch.manual_seed(0)
    model = distributed.wrap(Net(), strategy, torch.device("cpu"))
    params = list(model.parameters())
    opt = (PagedAdamW(params, lr=LR, weight_decay=WD, page_budget=BUDGET, page_bytes=PAGE) if paged
           else torch.optim.AdamW(params, lr=LR, weight_decay=WD))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.1 * s))
    return model, opt, sched


def train(model, opt, sched, start: int, stop: int) -> list[float]:
    """Steps start..stop-1; the loss of each step averaged over ranks."""
    rank, losses = dist.get_rank(), []
    for step in range(start, stop):
        loss = model(batch(step, rank)).pow(2).mean()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(distributed.all_reduce_sum([loss.item()], torch.device("cpu"))[0] / dist.get_world_size())
    return losses


def full(model) -> dict[str, torch.Tensor]:
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for n, p in model.named_parameters()}


def max_rel(a: dict, b: dict) -> float:
    return max(((a[k] - b[k]).abs() / b[k].abs().clamp_min(1e-12)).max().item() for k in a)


def _ckpt(model, strategy: str):
    return distributed.unwrap(model) if strategy == "ddp" else model


def main(out: Path) -> None:
    distributed.init(torch.device("cpu"))
    rank = dist.get_rank()
    report = {}
    for strategy in ("ddp", "fsdp"):
        ref_model, ref_opt, ref_sched = build(strategy, paged=False)
        model, opt, sched = build(strategy, paged=True)
        ref_losses = train(ref_model, ref_opt, ref_sched, 0, STEPS)
        losses = train(model, opt, sched, 0, STEPS)
        paging = opt.memory_report()
        straight = full(model)
        ref_osd = checkpoint.get_optimizer_state_dict(ref_model, ref_opt, options=checkpoint.FULL)
        osd = checkpoint.get_optimizer_state_dict(model, opt, options=checkpoint.FULL)
        state_diff = max((max_rel({0: osd["state"][k][m]}, {0: ref_osd["state"][k][m]})
                          for k in ref_osd["state"] for m in ("exp_avg", "exp_avg_sq")), default=0.0) if rank == 0 else 0.0

        folder = Path(tempfile.mkdtemp(prefix=f"paged-{strategy}-")) if rank == 0 else None
        holder = [str(folder) if folder else None]
        dist.broadcast_object_list(holder)
        folder = Path(holder[0])
        model, opt, sched = build(strategy, paged=True)
        train(model, opt, sched, 0, STEPS // 2)
        # Under DDP the inner module goes to the checkpoint: the engine's trainable_state() keeps no
        # weights of a DDP wrapper (its names carry "module.", DCP's do not; reported upstream).
        saved = checkpoint.save(folder, STEPS // 2, _ckpt(model, strategy), opt, sched, {}, "", keep_last=1)
        model, opt, sched = build(strategy, paged=True)  # a fresh process's objects
        checkpoint.load(saved, _ckpt(model, strategy), opt, sched)
        train(model, opt, sched, STEPS // 2, STEPS)
        resumed = full(model)
        report[strategy] = {
            "max_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
            "param_vs_adamw": max_rel(straight, full(ref_model)),
            "state_vs_adamw": state_diff,
            "resumed_vs_straight": max_rel(resumed, straight),
            "is_dtensor": type(next(model.parameters())).__name__ == "DTensor",
            **{k: paging[k] for k in ("state_bytes", "budget_bytes", "max_resident_bytes", "page_ins", "page_outs")},
        }
    if rank == 0:
        out.write_text(json.dumps(report, indent=2))
    distributed.barrier()
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
