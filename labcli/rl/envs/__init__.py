"""Environments for the planning agents: TextWorld games (textworld.py) and BabyAI missions (babyai.py)."""
