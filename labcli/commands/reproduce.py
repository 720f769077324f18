"""`lab reproduce`: Reproduce a paper's headline number on shipped data."""

from labcli.commands.common import verb_command
from labcli.registry import VERBS

command = verb_command("reproduce", VERBS["reproduce"])
