"""`lab bench`: Measure speed and memory of techniques side by side (JSON, table, plot)."""

from labcli.commands.common import verb_command
from labcli.registry import VERBS

command = verb_command("bench", VERBS["bench"])
