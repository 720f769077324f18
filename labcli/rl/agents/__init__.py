"""Agents over knowledge graphs: symbolic planners, PPO/DQN with text, flat or graph encoders, the
LM subgoal planner and the LM + RL agent that executes its subgoals."""
