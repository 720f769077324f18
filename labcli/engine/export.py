"""Save a run's final model as `RUN/model/` (a save_pretrained folder, LoRA merged) for serving."""

from __future__ import annotations

from pathlib import Path

from labcli import runs
from labcli.engine import zero
from labcli.engine.checkpoint import FULL
from labcli.engine.distributed import barrier, world


def save_final_model(model, tokenizer, method: str, folder: Path, adapter_folder: Path | None = None) -> Path:
    """Every rank calls this; rank 0 writes. Also keeps the raw adapter for LoRA/QLoRA."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from labcli.models.peft_prep import merged_for_export

    rank, size = world()
    sharded = size > 1 and any(type(p).__name__ == "DTensor" for p in model.parameters())
    state = get_model_state_dict(model, options=FULL) if sharded else None
    with zero.gathered(model):  # ZeRO-3: every rank takes part in gathering the partitioned parameters
        if rank == 0:
            if adapter_folder is not None and method != "full":
                embeddings_trained = model.get_input_embeddings().weight.requires_grad
                # Under FSDP the module holds shards: PEFT saves from the gathered state instead.
                extra = {"state_dict": state} if sharded else {}
                runs.replace_dir(adapter_folder, lambda tmp: model.save_pretrained(
                    str(tmp), save_embedding_layers=embeddings_trained, **extra))
            if sharded and method == "lora":
                plain, state = model.get_base_model(), merged_lora_state(model, state)
            else:
                plain = model if sharded else merged_for_export(model, method)

            def write(tmp: Path) -> None:
                plain.save_pretrained(str(tmp), state_dict=state) if sharded else plain.save_pretrained(str(tmp))
                tokenizer.save_pretrained(str(tmp))

            runs.replace_dir(folder, write)
    barrier()
    return Path(folder)


def merged_lora_state(model, state: dict) -> dict:
    """The plain model's state from a LoRA model's gathered state: W + scale * B @ A per adapted layer."""
    merged = {}
    for key, tensor in state.items():
        if ".lora_" in key:
            continue
        name = key.removeprefix("base_model.model.")
        if key.endswith(".base_layer.weight"):
            layer = key.removesuffix(".base_layer.weight")
            module = model.get_submodule(layer)
            for adapter in module.active_adapters:
                a, b = state[f"{layer}.lora_A.{adapter}.weight"], state[f"{layer}.lora_B.{adapter}.weight"]
                tensor = tensor + module.scaling[adapter] * (b.float() @ a.float()).to(tensor.dtype)
        merged[name.replace(".base_layer.", ".")] = tensor
    return merged
