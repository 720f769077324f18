"""`lab reproduce`: Rerun a finished run from its saved config and check that its numbers reproduce."""

from labcli.commands.common import verb_command
from labcli.registry import VERBS

command = verb_command("reproduce", VERBS["reproduce"])
