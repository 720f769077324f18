"""Llama-2-70B finetuning that would run: QLoRA on one GPU, or full FSDP2 on 2 x 8 GPUs.

Both recipes (`llama2-70b-qlora`, `llama2-70b-fsdp`) train a causal LM on plain text with the same
code path as `finetune tiny-lm`, configured for 70B: FSDP2 full shard per block, activation
checkpointing, FSDP2 CPU offload, lab's paged AdamW (labcli/optim), loading on rank 0 only and
sharded checkpoints (torch.distributed.checkpoint), or NF4 QLoRA. Before loading
anything the run prints its memory plan (`labcli.engine.memory_plan`) for the 70B architecture
(`plan_model`, a shipped config) on `plan_nodes` x `plan_gpus_per_node` GPUs, and says whether it
fits. The examples need the hub model (gated: accept Meta's licence, `LAB_ONLINE=1`) and GPUs;
`model=tiny-llama` runs the same path on a CPU.
"""

from __future__ import annotations

from pydantic import Field

from labcli.models.causal_lm import CausalLMConfig
from labcli.runs import Run

RESUMABLE = True
MULTI_PROCESS = True


class Config(CausalLMConfig):
    plan_model: str = Field("llama2-70b", description="Shipped config whose memory plan is printed at start")
    plan_nodes: int = Field(2, ge=1, description="Nodes of the printed plan")
    plan_gpus_per_node: int = Field(8, ge=1, description="GPUs per node of the printed plan")
    plan_gpu_memory_gb: float = Field(80.0, gt=0, description="GPU memory of the printed plan, GB")


def memory_plan(cfg: Config):
    """The run's settings as a memory plan for the 70B architecture."""
    from labcli.engine.memory_plan import Plan

    t = cfg.train
    strategy = {"auto": "ddp", "single": "single"}.get(t.strategy, t.strategy)
    world = cfg.plan_nodes * cfg.plan_gpus_per_node
    if world == 1:
        strategy = "single"
    return Plan(model=cfg.plan_model, method=cfg.method, strategy=strategy, nodes=cfg.plan_nodes,
                gpus_per_node=cfg.plan_gpus_per_node, gpu_memory_gb=cfg.plan_gpu_memory_gb, precision=t.precision,
                lora_r=cfg.lora.r, lora_dropout=cfg.lora.dropout, seq_len=cfg.block_size,
                micro_batch=t.micro_batch_size, grad_accum=max(1, t.batch_size // (t.micro_batch_size * world)),
                activation_checkpointing="full" if t.activation_checkpointing else "none",
                offload="params" if t.fsdp_cpu_offload else "none",
                loading="rank0" if t.fsdp_load_on_rank0 else "every-rank",
                optimizer=t.optimizer if t.optimizer in ("adamw", "lab-paged-adamw", "sgd") else "adamw")


def plan(cfg: Config) -> str:
    from labcli.engine.memory_plan import describe, estimate, fmt

    e = estimate(memory_plan(cfg))
    return (f"memory plan ({describe(e.plan)}): peak {fmt(e.peak)} per GPU at the {e.peak_moment}, "
            f"{'fits' if e.fits_gpu else 'does NOT fit'} in {e.plan.gpu_memory_gb:g} GB; host RAM {fmt(e.host_total)} per node")


def run(cfg: Config, ctx: Run) -> None:
    from labcli.data.text import collate_lm
    from labcli.engine.export import save_final_model
    from labcli.engine.trainer import train
    from labcli.models.causal_lm import prepare

    if ctx.is_main:
        print(plan(cfg), flush=True)
    loaded, model, params, train_set, eval_set = prepare(cfg)
    result = train(model, train_set, collate_lm, cfg.train, ctx, seed=cfg.seed, eval_set=eval_set)
    save_final_model(result.model, loaded.tokenizer, cfg.method, ctx.path("model"), ctx.path("adapter"))
    if not ctx.is_main:
        return
    summary = {"task": "causal-lm", "model": cfg.model, "method": cfg.method, **params, "plan": plan(cfg),
               "steps": result.steps, "final_loss": result.final_loss, "eval_loss": result.eval_loss,
               "tokens": result.tokens, "peak_memory_mb": round(result.peak_memory_mb, 1)}
    ctx.write_summary(summary)
    ctx.write_report(f"# {ctx.verb} {ctx.recipe}\n\n{summary['plan']}\n\nfinal loss {result.final_loss:.4f}\n")
    print(f"{cfg.model} ({cfg.method}): {result.steps} steps, final loss {result.final_loss:.4f}, "
          f"{params['trainable_params']:,} trainable parameters")
