"""The layer rule: libraries never import recipes, a recipe never imports another recipe."""

from labcli.devtools import imports


def test_no_upward_imports():
    _, violations = imports.analyse()
    assert violations == [], "\n".join(violations)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """A library module importing a recipe is reported (the rule is not true by construction)."""
    lib = tmp_path / "labcli" / "models" / "bad.py"
    rec = tmp_path / "labcli" / "recipes" / "finetune" / "x.py"
    for path, text in ((lib, "from labcli.recipes.finetune import x\n"), (rec, "import labcli.recipes.bench.y\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "labcli" / "recipes" / "bench").mkdir(parents=True)
    (tmp_path / "labcli" / "recipes" / "bench" / "y.py").write_text("")
    monkeypatch.setattr(imports, "ROOT", tmp_path / "labcli")
    _, violations = imports.analyse()
    assert len(violations) == 2
    assert "library labcli.models.bad imports recipe labcli.recipes.finetune.x" in violations[0] + violations[1]
    assert any("imports another recipe labcli.recipes.bench.y" in v for v in violations)
