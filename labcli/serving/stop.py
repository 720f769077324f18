"""`lab serve stop`: stop servers started with --detach (all of them, or one by --name).

Each server runs in its own process group; stopping sends SIGTERM to the group, then SIGKILL
after a grace period, and checks that no process of the group is left.
"""

from __future__ import annotations

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.run import Run
from labcli.errors import UserError
from labcli.serving import process


class Config(RecipeConfig):
    name: str = Field("", description="Server to stop (as printed at start, e.g. triton-8000); empty: all of them")


def run(cfg: Config, ctx: Run) -> None:
    servers = process.load_servers()
    if cfg.name:
        names = [s.name for s in servers]
        servers = [s for s in servers if s.name == cfg.name]
        if not servers:
            raise UserError(f"no running server named '{cfg.name}'", f"running: {', '.join(names) or 'none'}")
    stopped, left = [], []
    for server in servers:
        alive = bool(process.group_pids(server.pgid))
        (stopped if process.stop_server(server) else left).append(server.name)
        print(f"{server.name}: {'stopped' if alive else 'was not running'} ({server.backend}, {server.endpoints.get('http', '')})")
    if not servers:
        print("no servers running")
    ctx.write_summary({"stopped": stopped, "left_running": left})
    ctx.write_report("# lab serve stop\n\n" + "".join(f"- {n}: stopped\n" for n in stopped)
                     + "".join(f"- {n}: STILL RUNNING\n" for n in left))
    if left:
        raise UserError(f"could not stop {', '.join(left)}", "check `ps -eo pid,pgid,cmd` and kill the group by hand")
