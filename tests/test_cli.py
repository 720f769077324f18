"""The command tree: every recipe validates, help works everywhere, ls/cp/env work, errors are one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from labcli import registry
from labcli.cli import app

runner = CliRunner()


@pytest.mark.parametrize("recipe", registry.all_recipes(), ids=lambda r: f"{r.verb}/{r.name}")
def test_every_recipe_validates(recipe):
    cfg, found = registry.load(recipe.verb, recipe.name, None, [])
    assert found == recipe and isinstance(cfg, found.module().Config)
    assert recipe.description, "every recipe needs a description for `lab ls`"
    assert recipe.command.startswith(f"lab {recipe.verb} "), "line 1 must be the command that runs it"


@pytest.mark.parametrize("verb", list(registry.VERBS))
def test_help_for_every_verb(verb):
    result = runner.invoke(app, [verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "--resume" in result.output and "recipes:" in result.output


@pytest.mark.parametrize("recipe", registry.all_recipes(), ids=lambda r: f"{r.verb}/{r.name}")
def test_recipe_help_lists_keys(recipe):
    result = runner.invoke(app, [recipe.verb, recipe.name, "--help"])
    assert result.exit_code == 0, result.output
    assert "seed" in result.output


def test_ls_lists_every_recipe():
    result = runner.invoke(app, ["ls"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for recipe in registry.all_recipes():
        assert recipe.name in result.output
    for verb in registry.VERBS:
        assert verb in result.output


def test_cp_copies_and_the_copy_runs_validated(tmp_path):
    dest = tmp_path / "mine.yaml"
    result = runner.invoke(app, ["cp", "finetune/tiny-lm", str(dest)])
    assert result.exit_code == 0, result.output
    cfg, _ = registry.load("finetune", None, dest, ["train.max_steps=3"])
    assert cfg.train.max_steps == 3


def test_env_reports_versions_and_paths(run_lab):
    out = run_lab("env").stdout
    for needle in ("torch", "transformers", "bitsandbytes", "bitsandbytes 4-bit", "Triton", "CUDA", "MuJoCo"):
        assert needle in out


def test_flags_become_overrides():
    from labcli.launch import flags_to_overrides

    assert flags_to_overrides(["--method", "qlora", "--paged", "train.lr=1e-3", "--eval-only"]) == [
        "method=qlora", "paged=true", "train.lr=1e-3", "eval_only=true"]


BAD_INPUTS = {
    "unknown recipe": (["finetune", "no-such-recipe"], "unknown finetune recipe 'no-such-recipe'"),
    "unknown key": (["finetune", "tiny-lm", "train.lrr=1"], "unknown key 'train.lrr'"),
    "wrong type": (["finetune", "tiny-lm", "train.max_steps=many"], "key 'train.max_steps' has bad value 'many'"),
    "missing data file": (["finetune", "tiny-lm", "data=/nonexistent/corpus.txt", "train.max_steps=1"],
                          "data file not found"),
    "unknown model offline": (["finetune", "tiny-lm", "model=no-org/no-such-model", "train.max_steps=1"],
                              "not in the local cache and lab is offline"),
    "unknown verb for ls": (["ls", "dance"], "unknown verb 'dance'"),
    "bad override": (["finetune", "tiny-lm", "stray"], "unexpected argument 'stray'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(run_lab, case):
    args, message = BAD_INPUTS[case]
    proc = run_lab(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0] and "(hint: " in lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_yaml_names_file_and_line(run_lab, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: tiny-lm\ntrain:\n  lr: [1,\n")
    proc = run_lab("finetune", "--config", str(bad), check=False)
    assert proc.returncode == 2
    assert f"bad YAML in {bad} at line" in proc.stderr and "Traceback" not in proc.stderr
