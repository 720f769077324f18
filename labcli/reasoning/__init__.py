"""Reasoning distillation: the arithmetic generator, shipped benchmarks, rewards, CoT SFT, GRPO/DAPO, KD."""
