"""FSDP2 through the engine's `distributed.wrap` on NCCL (run under torchrun, one GPU per rank).

With one GPU the group has one rank, so nothing is really sharded across devices; what it checks is
that lab's FSDP2 path (process group on NCCL, `fully_shard` per block and at the root, DTensor
parameters, AdamW on them) runs on CUDA and trains exactly like the unwrapped model, step by step.
Used by labcli/devtools/gpu_check.sh:  torchrun --standalone --nproc_per_node 1 -m labcli.devtools.gpu_fsdp_check
"""

from __future__ import annotations

import copy

import torch


def main() -> None:
    from labcli.engine import distributed
    from labcli.models import load_model

    device = distributed.pick_device("cuda")
    distributed.init(device)
    if not torch.distributed.is_initialized():  # WORLD_SIZE=1: init() leaves it to us
        torch.distributed.init_process_group("nccl")
    plain = load_model("tiny-gpt2", "causal-lm", seed=0).model.to(device)
    sharded = distributed.wrap(copy.deepcopy(plain), "fsdp", device)
    tokens = torch.randint(0, plain.config.vocab_size, (8, 64), generator=torch.Generator().manual_seed(0)).to(device)
    losses = {}
    for name, model in (("plain", plain), ("fsdp", sharded)):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses[name] = []
        for _ in range(5):
            loss = model(input_ids=tokens, labels=tokens).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses[name].append(loss.item())
    kinds = {type(p).__name__ for p in sharded.parameters()}
    gap = max(abs(a - b) for a, b in zip(losses["plain"], losses["fsdp"]))
    print(f"backend {torch.distributed.get_backend()}, world {torch.distributed.get_world_size()}, parameter types {kinds}")
    print(f"losses plain {[round(x, 5) for x in losses['plain']]}")
    print(f"losses fsdp  {[round(x, 5) for x in losses['fsdp']]}  max gap {gap:.2e}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
