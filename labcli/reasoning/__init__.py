"""Reasoning distillation: the arithmetic generator, tasks (shipped sets in labcli/data/), rewards,
language-model plumbing (sampling, log-probs, accuracy) and GRPO/DAPO as a step on the engine."""
