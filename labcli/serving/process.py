"""Server processes: free-port checks, start in its own process group, readiness, clean stop.

Every server lab starts runs in a new session (process group), so stopping it with SIGTERM
then SIGKILL to the group also ends the workers it spawned (Triton's Python-backend stubs,
TorchServe's Java frontend and Python workers). A state file per server under
LAB_HOME/serving/servers/ lets `lab serve stop` find detached servers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labcli import runs
from labcli.errors import UserError
from labcli.paths import lab_home

HOST = "127.0.0.1"


def state_dir() -> Path:
    return lab_home() / "serving" / "servers"


def port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, as servers set: TIME_WAIT is no obstacle)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_ports(ports: list[int], host: str = HOST) -> None:
    for port in ports:
        if not 1 <= port <= 65535:
            raise UserError(f"port {port} is out of range", "pick a port between 1024 and 65535")
        if not port_free(port, host):
            raise UserError(f"port {port} on {host} is busy", f"pass --port N (this server needs {len(ports)} consecutive ports), "
                            "or stop the other server (`lab serve stop`)")


def free_port_block(count: int, start: int = 20000, stop: int = 60000) -> int:
    """The first port P in [start, stop) with P..P+count-1 all free on 127.0.0.1 (for tests and benches)."""
    import random

    rng = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(200):
        port = rng.randrange(start, stop - count)
        if all(port_free(p) for p in range(port, port + count)):
            return port
    raise UserError("no free block of ports on 127.0.0.1", "stop some servers")


@dataclass
class Server:
    """A started server: what `lab serve stop` and the tests need to know about it."""

    name: str
    backend: str
    pid: int
    pgid: int
    endpoints: dict
    run_dir: str
    log: str
    tmp_dir: str = ""  # a scratch folder to remove once the server is stopped
    started: float = field(default_factory=time.time)

    @property
    def state_file(self) -> Path:
        return state_dir() / f"{self.name}.json"

    def save(self) -> None:
        runs.write_json(self.state_file, asdict(self))


def load_servers() -> list[Server]:
    out = []
    for path in sorted(state_dir().glob("*.json")) if state_dir().is_dir() else []:
        try:
            out.append(Server(**json.loads(path.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, TypeError):
            path.unlink(missing_ok=True)
    return out


def start(cmd: list[str], *, log: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start `cmd` in its own session with stdout+stderr going to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=cwd, start_new_session=True)
        except FileNotFoundError:
            raise UserError(f"cannot start {cmd[0]}: not found", "install it (see `lab serve RECIPE --help`)") from None


def http_ok(url: str, headers: dict | None = None, timeout: float = 2.0, check=None) -> bool:
    """True when `url` answers 200 (and `check(body)` holds, if given)."""
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status == 200 and (check is None or check(resp.read().decode("utf-8", errors="replace")))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float, what: str, hint: str,
               headers: dict | None = None, check=None, failed=None) -> float:
    """Poll `url` until it answers 200; fail with the log's last lines if the process dies or times out.

    `failed()` may return a message when the server is alive but cannot become ready (crash-looping workers).
    """
    from rich.console import Console

    started = time.perf_counter()
    with Console(stderr=True).status(f"waiting for {what} to be ready ({url})"):
        while time.perf_counter() - started < timeout:
            if proc.poll() is not None:
                stop_group(proc.pid)
                raise UserError(f"{what} exited with code {proc.returncode} while starting: {last_error(log)}", hint)
            if http_ok(url, headers, check=check):
                return time.perf_counter() - started
            problem = failed() if failed else None
            if problem:
                stop_group(proc.pid)
                raise UserError(f"{what} could not start: {problem[:300]}", hint)
            time.sleep(0.25)
    stop_group(proc.pid)
    raise UserError(f"{what} was not ready after {timeout:.0f}s: {last_error(log)}", f"see {log}; {hint}")


def last_error(log: Path) -> str:
    """The most telling line of a server log (an error line if any, else the last line)."""
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if any(k in ln for k in ("error", "Error", "ERROR", "failed", "Exception"))]
    line = (errors or lines or ["no output"])[-1]
    return line[:300]


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def stop_group(pgid: int, grace: float = 15.0) -> bool:
    """SIGTERM the group, wait up to `grace` s, then SIGKILL; True when no process is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not group_pids(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_pids(pgid):
            reap(pgid)
            time.sleep(0.1)
    reap(pgid)
    return not group_pids(pgid)


def reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_server(server: Server) -> bool:
    import shutil

    ok = stop_group(server.pgid)
    if ok:
        server.state_file.unlink(missing_ok=True)
        if server.tmp_dir:
            shutil.rmtree(server.tmp_dir, ignore_errors=True)
    return ok


@contextmanager
def stopped_on_error(server: Server):
    """Stop the server's process group if anything (an error, Ctrl-C) interrupts the block."""
    try:
        yield
    except BaseException:
        stop_server(server)
        raise


def serve_foreground(proc: subprocess.Popen, server: Server) -> None:
    """Block until Ctrl-C / SIGTERM (or the server dies), then stop the whole process group.

    Our own handlers, installed here, decide what SIGINT and SIGTERM do: client libraries imported
    for the smoke test (gevent, grpc) may have replaced Python's default SIGINT handling.
    """
    stop = {"signal": None}

    def request_stop(signum, frame):
        stop["signal"] = signum

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    print("serving; press Ctrl-C to stop", flush=True)
    try:
        while proc.poll() is None and stop["signal"] is None:
            time.sleep(0.2)
        if stop["signal"] is None:
            print(f"{server.backend} exited with code {proc.returncode}: {last_error(Path(server.log))}", flush=True)
        else:
            print(f"stopping {server.backend} ...", flush=True)
    finally:
        left = not stop_server(server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(f"{server.backend} stopped" + (" (some processes did not exit!)" if left else ", no process left"), flush=True)


def stop_servers(name: str = "") -> None:
    """`lab serve stop`: stop detached servers (one by name, or all) and check no process is left."""
    servers = load_servers()
    if name:
        names = [s.name for s in servers]
        servers = [s for s in servers if s.name == name]
        if not servers:
            raise UserError(f"no running server named '{name}'", f"running: {', '.join(names) or 'none'}")
    left = []
    for server in servers:
        alive = bool(group_pids(server.pgid))
        if not stop_server(server):
            left.append(server.name)
        print(f"{server.name}: {'stopped' if alive else 'was not running'} ({server.backend}, {server.endpoints.get('http', '')})")
    if not servers:
        print("no servers running")
    if left:
        raise UserError(f"could not stop {', '.join(left)}", "check `ps -eo pid,pgid,cmd` and kill the group by hand")
