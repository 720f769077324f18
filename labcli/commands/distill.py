"""`lab distill`: Distill reasoning and knowledge into small students (CoT SFT, GRPO, DAPO, KD)."""

from labcli.commands.common import verb_command
from labcli.registry import VERBS

command = verb_command("distill", VERBS["distill"])
