"""The command tree: every recipe validates, help works everywhere, ls/cp/env work, errors are one
line and leave nothing on disk, --config overlays a recipe, recipes refuse what they cannot do."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
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
    assert recipe.module_name.startswith(f"labcli.recipes.{recipe.verb}.")


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


def test_ls_lists_every_recipe_uncut_when_piped(lab_main):
    out = lab_main("ls").stdout
    for recipe in registry.all_recipes():
        assert recipe.name in out and recipe.command in out
    for verb in registry.VERBS:
        assert verb in out


def test_cp_copies_and_the_copy_names_its_recipe(tmp_path):
    dest = tmp_path / "mine.yaml"
    result = runner.invoke(app, ["cp", "finetune/tiny-lm", str(dest)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(dest.read_text())["recipe"] == "tiny-lm"
    cfg, recipe = registry.load("finetune", None, dest, ["train.max_steps=3"])
    assert recipe.name == "tiny-lm" and cfg.train.max_steps == 3


def test_config_file_overlays_the_named_recipe(tmp_path):
    """A partial YAML changes only what it names; key=value overrides win over it."""
    partial = tmp_path / "partial.yaml"
    partial.write_text("train:\n  lr: 0.5\nblock_size: 16\n")
    cfg, _ = registry.load("finetune", "tiny-lm", partial, ["block_size=24"])
    base, _ = registry.load("finetune", "tiny-lm", None, [])
    assert cfg.train.lr == 0.5 and cfg.block_size == 24
    assert cfg.train.max_steps == base.train.max_steps and cfg.model == base.model


def test_errors_name_where_the_bad_value_was_set(tmp_path):
    from labcli.errors import UserError

    with pytest.raises(UserError, match=r"key 'train.max_steps' has bad value 'many' in override 'train.max_steps=many'"):
        registry.load("finetune", "tiny-lm", None, ["train.max_steps=many"])
    partial = tmp_path / "mine.yaml"
    partial.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(UserError, match=f"unknown key 'train.max_stepz' in {partial}"):
        registry.load("finetune", "tiny-lm", partial, [])
    with pytest.raises(UserError, match="does not say which finetune recipe"):
        registry.load("finetune", None, partial, [])


def test_flags_become_overrides():
    from labcli.launch import flags_to_overrides

    assert flags_to_overrides(["--method", "qlora", "--paged", "train.lr=1e-3", "--eval-only"]) == [
        "method=qlora", "paged=true", "train.lr=1e-3", "eval_only=true"]


BAD_INPUTS = {
    "unknown recipe": (["finetune", "no-such-recipe"], "unknown finetune recipe 'no-such-recipe'"),
    "unknown key": (["finetune", "tiny-lm", "train.lrr=1"], "unknown key 'train.lrr' in override"),
    "wrong type": (["finetune", "tiny-lm", "train.max_steps=many"], "key 'train.max_steps' has bad value 'many'"),
    "missing data file": (["finetune", "tiny-lm", "data=/nonexistent/corpus.txt", "train.max_steps=1"],
                          "data file not found"),
    "unknown model offline": (["finetune", "tiny-lm", "model=no-org/no-such-model", "train.max_steps=1"],
                              "not in the local cache and lab is offline"),
    "unknown verb for ls": (["ls", "dance"], "unknown verb 'dance'"),
    "bad override": (["finetune", "tiny-lm", "stray"], "unexpected argument 'stray'"),
    "resume unsupported": (["detect", "spam", "--resume", "auto"], "cannot resume"),
    "nproc unsupported": (["detect", "spam", "--nproc", "2"], "runs in one process"),
    "no recipe": (["finetune"], "no finetune recipe given"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(lab_main, tmp_path, case):
    args, message = BAD_INPUTS[case]
    proc = lab_main(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0] and "(hint: " in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "a failed run left a folder"


def test_bad_yaml_names_file_and_line(lab_main, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: tiny-lm\ntrain:\n  lr: [1,\n")
    proc = lab_main("finetune", "--config", str(bad))
    assert proc.returncode == 2 and f"bad YAML in {bad} at line" in proc.stderr


def test_plain_commands_write_no_run_folder(lab_main, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "home"))  # no servers left registered by other tests
    proc = lab_main("serve", "stop")
    assert proc.returncode == 0 and "no servers running" in proc.stdout
    assert not (tmp_path / "runs").exists()
    proc = lab_main("serve", "stop", "--name", "nobody-1")
    assert proc.returncode == 2 and "no running server named 'nobody-1'" in proc.stderr


@pytest.mark.slow
def test_env_reports_versions_and_paths(run_lab):
    out = run_lab("env").stdout
    for needle in ("torch", "transformers", "bitsandbytes", "bitsandbytes 4-bit", "Triton", "CUDA", "MuJoCo"):
        assert needle in out


@pytest.mark.parametrize("argv", [["launch", "slurm"], ["nosuch"], ["export", "space"]])
def test_usage_errors_are_one_line_without_traceback(lab_main, argv):
    """Typer vendors its own click; its usage errors still become `error: ... (hint: ...)`, exit 2."""
    proc = lab_main(*argv)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--help`" in proc.stderr


@pytest.mark.parametrize("argv", [["launch", "--help"], ["export", "space", "--help"], ["serve", "stop", "--help"], ["check", "--help"]])
def test_plain_commands_have_help(lab_main, argv):
    proc = lab_main(*argv)
    assert proc.returncode == 0 and "Usage" in proc.stdout


def test_readme_recipe_table_is_lab_ls(lab_main):
    """README's table of verbs and recipes is `lab ls --markdown`, verbatim: a new or renamed recipe
    shows up in the README (`python -m labcli.devtools.readme` rewrites the block)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- lab ls --markdown -->\n", 1)[1].split("<!-- end lab ls -->", 1)[0]
    assert block == lab_main("ls", "--markdown").stdout
