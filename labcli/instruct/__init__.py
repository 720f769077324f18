"""Instruction data: teachers (a local model or an OpenAI-compatible endpoint, one interface), a fast
ROUGE-L novelty index, and the Self-Instruct bootstrap (labcli.instruct.self_instruct)."""
