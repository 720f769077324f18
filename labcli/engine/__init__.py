"""The one training engine: every gradient loop in lab runs on `labcli.engine.loop.fit`.

    from labcli.engine.loop import LoopConfig, fit

    def step(loop, i):                    # step i (1-based) of cfg.max_steps
        loss = my_loss(loop.model, batch_of(i))
        loss.backward()
        grad_norm = loop.update()         # clip, optimizer step, zero grad (call it once or several times)
        return {"loss": loss.item(), "grad_norm": grad_norm}

    result = fit(model, step, ctx, cfg, device=device, seed=cfg_seed,
                 evaluate=lambda loop, i: {"eval_loss": ...}, state={"tokens": 0})

The engine owns the optimizer (`cfg.optimizer`, by name), the LR schedule (warm-up then cosine,
linear or constant, one LR per step), gradient clipping, `--resume` (weights, optimizer, schedule,
RNG and `loop.state` restored from the newest checkpoint, metrics.jsonl cut back to its step),
checkpoints (`save_every`, the last step, `keep_last`), metrics (every `log_every` steps, with `lr`
and `peak_mem_mb`; TensorBoard and W&B when asked), the progress bar (`progress=`), the evaluation
cadence (`eval_every` and the last step; `eval_at_start`) and early stopping on `eval_loss` (when
the config has `early_stopping_patience`). `LoopConfig` holds exactly the keys it honours; a recipe's
train section extends it with what its step reads.

Users: `trainer.train()` (SFT, classification, KD: a step over seeded global batches with
micro-batches, DDP/FSDP2 and gradient accumulation) and `labcli.reasoning.grpo.train()` (GRPO/DAPO:
a step is one rollout batch and its policy updates). Other modules: `checkpoint` (the checkpoint
format, also used by the RL agents), `distributed` (process group, DDP/FSDP2 wrapping), `zero` (DeepSpeed ZeRO-2/3:
`train.strategy=deepspeed`), `optimizers`,
`schedule`, `metrics` (the sinks), `export` (the final `RUN/model/`), `backprop` (memory techniques).
"""
