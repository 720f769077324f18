"""Server processes: busy ports are one-line errors; stopping a group leaves no process behind."""

from __future__ import annotations

import socket
import sys

import pytest

from labcli.errors import UserError
from labcli.serving import process


def test_a_busy_port_is_named():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is busy") as err:
            process.require_ports([port - 1, port] if port > 1 else [port])
        assert "--port" in err.value.hint
    with pytest.raises(UserError, match="out of range"):
        process.require_ports([70000])


def test_stop_group_ends_the_server_and_its_children(tmp_path):
    # a "server" whose child outlives a plain kill of the parent: only the process group catches both
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    proc = process.start([sys.executable, "-c", code], log=tmp_path / "server.log")
    import time

    deadline = time.monotonic() + 10
    while len(process.group_pids(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(process.group_pids(proc.pid)) == 2
    assert process.stop_group(proc.pid, grace=5) and process.group_pids(proc.pid) == []


def test_stop_by_an_unknown_name_lists_the_running_ones(lab_home):
    with pytest.raises(UserError, match="no running server named 'nope'"):
        process.stop_servers("nope")
