"""TorchServe launchers without a server: the one-line error when Java is missing. The real server runs
in tests/recipes/serve/test_torchserve.py and test_detector.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_run import one_line_error

from labcli.errors import UserError
from labcli.serving import torchserve


def test_without_java_says_what_to_install(tmp_path, monkeypatch, lab_main):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))  # a JAVA_HOME without bin/java: no Java
    with pytest.raises(UserError, match="Java 11\\+ and JAVA_HOME=.*no-jdk has no bin/java") as err:
        torchserve.java_check()
    assert "openjdk-17" in err.value.hint
    for verb, recipe in (("serve", "torchserve"), ("serve", "detector")):
        result = lab_main(verb, recipe, "--model" if recipe == "torchserve" else "--run", "anything")
        one_line_error(result, "TorchServe needs Java 11+")
        assert not (tmp_path / "runs").exists()
    one_line_error(lab_main("bench", "serve", "--backend", "torchserve"), "TorchServe needs Java 11+")


def test_properties_bind_every_listener_to_the_host(tmp_path):
    props = tmp_path / "config.properties"
    torchserve.write_properties(props, tmp_path, "m", "127.0.0.1", 9000, torchserve.Batching(4, 3, 2))
    text = props.read_text()
    for key, port in (("inference_address", 9000), ("management_address", 9001), ("metrics_address", 9002)):
        assert f"{key}=http://127.0.0.1:{port}" in text
    assert "grpc_inference_port=9003" in text and "grpc_management_port=9004" in text
    assert '"batchSize": 4' in text and '"maxBatchDelay": 3' in text and '"minWorkers": 2' in text
