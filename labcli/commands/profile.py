"""`lab profile`: Profile a training or inference step (torch.profiler trace, top ops)."""

from labcli.commands.common import verb_command
from labcli.registry import VERBS

command = verb_command("profile", VERBS["profile"])
