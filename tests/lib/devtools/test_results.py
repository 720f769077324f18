"""Every published table in docs/results is rendered from its committed data file."""

from labcli.devtools import results


def test_every_docs_table_matches_its_data():
    stale = results.check(write=False)
    assert stale == [], "re-render with `python -m labcli.devtools.results --write`: " + "; ".join(stale)


def test_a_hand_edited_table_is_caught(tmp_path, monkeypatch):
    (tmp_path / "results" / "data").mkdir(parents=True)
    (tmp_path / "results" / "data" / "x.json").write_text('{"command": "lab bench x", "summary": {"rows": [{"a": 1.5}]}}')
    doc = tmp_path / "results" / "x.md"
    doc.write_text("<!-- table: {file: data/x.json, rows: summary.rows} -->\n<!-- end table -->\n")
    monkeypatch.setattr(results, "DOCS", tmp_path)
    assert results.check(write=True) and results.check() == []
    assert "| 1.5 |" in doc.read_text() and "lab bench x" in doc.read_text()
    doc.write_text(doc.read_text().replace("| 1.5 |", "| 1.6 |"))
    stale = results.check()
    assert len(stale) == 1 and stale[0].endswith("results/x.md: table from data/x.json")


def test_a_table_written_by_hand_is_caught(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.md").write_text("# x\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    monkeypatch.setattr(results, "DOCS", tmp_path)
    (problem,) = results.check()
    assert problem.endswith("results/x.md: a table outside a <!-- table: --> block (no data file)")
