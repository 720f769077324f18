"""`lab serve`: Serve a run's model behind a real inference server."""

from labcli.commands.common import verb_command
from labcli.registry import VERBS

command = verb_command("serve", VERBS["serve"])
