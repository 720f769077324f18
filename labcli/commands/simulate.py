"""`lab simulate`: Control simulated robots and train RL agents."""

from labcli.commands.common import verb_command
from labcli.registry import VERBS

command = verb_command("simulate", VERBS["simulate"])
