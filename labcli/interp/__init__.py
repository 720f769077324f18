"""Interpretability tools for any hooked model: a TransformerLens `HookedRootModule` of lab's own
(labcli.models.attn_only) or any run's Hugging Face model bridged by TransformerLens
(`interp.models.load_run_model(RUN)`), since both use TransformerLens' hook names.

- `heads`: attention patterns, previous-token and induction scores per head, head ablation.
- `lens`: the logit lens (each layer's residual stream read out through the final LN and unembedding).
- `patching`: activation patching between clean and corrupted runs (transformer_lens.patching).
- `crosscheck`: the same patterns and ablations through nnsight, to check two ways of hooking agree.
- `models`: a run folder's model as a TransformerLens bridge.
"""
