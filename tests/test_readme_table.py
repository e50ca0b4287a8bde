"""benchmarks/readme_table.py writes README.md's demo table from a report.json (`make readme-figures`)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "readme_table.py"
_spec = importlib.util.spec_from_file_location("nmtrec_readme_table", SCRIPT)
rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rt)

REPORT = {
    "tasks": ["like", "click"],
    "methods": {
        "nmt": {"auc": {"like": 0.79284, "click": 0.78806}, "logloss": {}, "gauc": {}},
        "single_task": {"auc": {"like": 0.7946}, "logloss": {}, "gauc": {}},
        "weight_grid:0.9:0.1": {"auc": {"like": 0.7963, "click": float("nan")}, "logloss": {}, "gauc": {}},
    },
    "stages": [],
    "oracle_auc": {"like": 0.89531, "click": 0.81964},
    "constraint_audit_passed": True,
}
README = """# title
intro
<!-- demo-table:begin -->
| hand | typed |
|---|---|
| old | 0.1 |
<!-- demo-table:end -->
after the table
"""


def _files(tmp_path, report=REPORT, readme=README, config="name: cfg-x\nseed: 7\ntasks: [like, click]\n"):
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "report.json").write_text(json.dumps(report))
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "demo.yaml").write_text(config)
    return tmp_path / "runs" / "demo" / "report.json", tmp_path / "README.md", tmp_path / "demo.yaml"


def test_rewrites_only_the_marked_block(tmp_path):
    report, readme, config = _files(tmp_path)
    assert rt.update_readme(report, readme, config)
    text = readme.read_text()
    assert text.startswith("# title\nintro\n<!-- demo-table:begin -->\n")
    assert text.endswith("\n\n<!-- demo-table:end -->\nafter the table\n")
    assert "| hand | typed |" not in text and "| old |" not in text
    assert "`runs/demo/report.json` (config `cfg-x`, seed 7)" in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows == ["| method | like AUC (primary) | click AUC |",
                    "|---|---|---|",
                    "| **nmt** | **0.7928** | 0.7881 |",
                    "| single_task | 0.7946 | – |",
                    "| weight_grid:0.9:0.1 | 0.7963 | – |",
                    "| oracle (true probabilities) | 0.8953 | 0.8196 |"]
    # idempotent: a second run changes nothing
    assert not rt.update_readme(report, readme, config)
    assert readme.read_text() == text
    assert not list(tmp_path.glob(".README.md.*"))  # no temporary file left behind


def test_seed_and_name_from_the_report_win_over_the_config(tmp_path):
    report, readme, config = _files(tmp_path, report={**REPORT, "config": {"name": "from-report", "seed": 11}})
    rt.update_readme(report, readme, config)
    assert "(config `from-report`, seed 11)" in readme.read_text()


def test_clear_errors(tmp_path):
    report, readme, config = _files(tmp_path)
    with pytest.raises(rt.FigureError, match="run `make demo` first"):
        rt.update_readme(tmp_path / "missing.json", readme, config)
    readme.write_text("no markers\n")
    with pytest.raises(rt.FigureError, match="expected one"):
        rt.update_readme(report, readme, config)
    readme.write_text(README)
    config.write_text("name: other\nseed: 1\ntasks: [click, like]\n")
    with pytest.raises(rt.FigureError, match="not the config of this run"):
        rt.update_readme(report, readme, config)
    assert readme.read_text() == README  # nothing written on failure


def test_command_line_fails_with_a_message_when_the_report_is_missing(tmp_path):
    _, readme, config = _files(tmp_path)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--report", str(tmp_path / "nope.json"),
                           "--readme", str(readme), "--config", str(config)], capture_output=True, text=True)
    assert proc.returncode == 2 and "run `make demo` first" in proc.stderr
    assert readme.read_text() == README


def test_the_repository_readme_has_the_markers():
    text = (ROOT / "README.md").read_text()
    begin, end = "<!-- demo-table:begin -->", "<!-- demo-table:end -->"
    assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)


def test_generated_markdown_block_is_copied_between_its_markers(tmp_path):
    md = tmp_path / "priority.md"
    md.write_text("| world | gap |\n|---|---|\n| dense-1 | +0.0010 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench-priority:begin -->\nold\n<!-- bench-priority:end -->\nrest\n")
    assert rt.copy_block(md, readme, "bench-priority")
    text = readme.read_text()
    assert "| dense-1 | +0.0010 |" in text and "old" not in text and text.endswith("rest\n")
    assert not rt.copy_block(md, readme, "bench-priority")  # unchanged the second time
    with pytest.raises(rt.FigureError, match="bench-other"):
        rt.copy_block(md, readme, "bench-other")
