"""`lab finetune`: Finetune a model (full, LoRA, QLoRA) and score it."""

from labcli.commands.common import verb_command
from labcli.registry import VERBS

command = verb_command("finetune", VERBS["finetune"])
