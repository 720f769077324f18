"""`lab detect`: Attack, defend and detect: adversarial ML and ML for security."""

from labcli.commands.common import verb_command
from labcli.registry import VERBS

command = verb_command("detect", VERBS["detect"])
