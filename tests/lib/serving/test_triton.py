"""Triton launchers without a server: the one-line errors when the environment is missing or cannot be
built, and the model configuration. The real server runs in tests/recipes/serve/test_triton.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_run import one_line_error

from labcli.errors import UserError
from labcli.serving import triton


def test_no_environment_and_no_python311_names_both_and_the_fix(tmp_path, monkeypatch, lab_main):
    monkeypatch.setenv("LAB_TRITON_ENV", str(tmp_path / "no-env"))
    monkeypatch.setenv("TRITON_PYTHON", str(tmp_path / "no-python3.11"))
    with pytest.raises(UserError, match="cannot be built here: .*no-python3.11") as err:
        triton.tritonserver_paths(triton.triton_env())
    assert "apt-get install python3.11" in err.value.hint and "--launcher docker" in err.value.hint
    with pytest.raises(UserError, match="cannot build the Triton environment: .*no-python3.11"):
        triton.setup_env(tmp_path / "no-env")
    assert not (tmp_path / "no-env").exists()
    # the command says it in one line, before loading any model, and leaves no run folder
    result = lab_main("serve", "triton", "--model", "tiny-mbart")
    one_line_error(result, "no Triton server in")
    assert "python3.11" in result.stderr and not (tmp_path / "runs").exists()
    one_line_error(lab_main("bench", "serve"), "no Triton server in")


@pytest.mark.skipif(not Path("/usr/bin/python3.11").exists(), reason="needs the system python3.11")
def test_an_unbuilt_environment_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_TRITON_ENV", str(tmp_path / "no-env"))
    monkeypatch.delenv("TRITON_PYTHON", raising=False)
    with pytest.raises(UserError, match="is not built") as err:
        triton.prepare_local()
    assert "--setup" in err.value.hint


def test_model_config_states_batching_and_instances():
    on = triton.model_config("m_text", "text", "seq2seq", 50, triton.ModelOptions(True, 8, 500, 2, 3))
    assert "max_batch_size: 8" in on and "max_queue_delay_microseconds: 500" in on
    assert "count: 2 kind: KIND_CPU" in on and 'string_value: "3"' in on
    off = triton.model_config("m_logits", "logits", "causal-lm", 50, triton.ModelOptions(dynamic_batching=False))
    assert "dynamic_batching" not in off and "decoder_input_ids" not in off and "dims: [ -1, 50 ]" in off


def test_the_front_takes_the_port_and_triton_moves_to_port_plus_3():
    cmd = triton.behind_gateway(["tritonserver"], "127.0.0.1", 8500, gateway=True)
    assert cmd[-4:] == ["--listen=127.0.0.1:8500", "--upstream=127.0.0.1:8503", "--", "tritonserver"]
    assert triton.behind_gateway(["tritonserver"], "127.0.0.1", 8500, gateway=False) == ["tritonserver"]
    assert triton.ports(8500, True) == [8500, 8501, 8502, 8503] and triton.ports(8500, False) == [8500, 8501, 8502]
