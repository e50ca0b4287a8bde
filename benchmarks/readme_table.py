"""Write README.md's demo table from a run's report.json, never by hand (`make readme-figures`).

    python -m benchmarks.readme_table [--report runs/demo/report.json] [--readme README.md] [--config configs/demo.yaml]

Replaces what lies between the lines `<!-- demo-table:begin -->` and `<!-- demo-table:end -->` with a
markdown table: one row per method of the report (in its order) with its test AUC per task, then the
oracle row (true probabilities, synthetic data) when the report has one, under a line naming the
report, the config name and the seed. The README is rewritten atomically (temporary file, rename).
The config name and seed come from the report when it carries them, else from --config.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from nmtrec.components.common.files import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]


class FigureError(Exception):
    """A missing or unusable input; the message says what to do."""


def _fmt(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _run_identity(report: dict, config: Path | None) -> tuple[str, object]:
    """(config name, seed): from the report if it says, else from the config file."""
    cfg = report.get("config") if isinstance(report.get("config"), dict) else {}
    name = report.get("config_name", cfg.get("name"))
    seed = report.get("seed", cfg.get("seed"))
    if (name is None or seed is None) and config is not None:
        if not config.is_file():
            raise FigureError(f"{config}: config not found (needed for the name and seed the report lacks)")
        raw = yaml.safe_load(config.read_text()) or {}
        if raw.get("tasks") and list(raw["tasks"]) != list(report["tasks"]):
            raise FigureError(f"{config} has tasks {raw['tasks']} but the report {report['tasks']}: "
                              f"not the config of this run (pass --config)")
        name = raw.get("name") if name is None else name
        seed = raw.get("seed") if seed is None else seed
    return ("?" if name is None else str(name)), ("?" if seed is None else seed)


def render_table(report: dict, source: str, config: Path | None = None) -> str:
    """The markdown block (caption line + table) for a report.json dict."""
    try:
        tasks, methods = list(report["tasks"]), report["methods"]
    except (KeyError, TypeError):
        raise FigureError(f"{source}: not a report.json (needs 'tasks' and 'methods')") from None
    name, seed = _run_identity(report, config)
    head = ["method"] + [f"{t} AUC" + (" (primary)" if i == 0 else "") for i, t in enumerate(tasks)]
    lines = [f"Test-split AUC from `{source}` (config `{name}`, seed {seed});",
             "written by `make readme-figures` (benchmarks/readme_table.py), do not edit by hand.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, m in methods.items():
        auc = m.get("auc", {})
        label = f"**{method}**" if method == "nmt" else method
        cells = [_fmt(auc.get(t)) for t in tasks]
        if method == "nmt":
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join([label] + cells) + " |")
    if report.get("oracle_auc"):
        lines.append("| " + " | ".join(["oracle (true probabilities)"]
                                        + [_fmt(report["oracle_auc"].get(t)) for t in tasks]) + " |")
    return "\n".join(lines)


def replace_block(text: str, block: str, where: str = "README.md", name: str = "demo-table") -> str:
    """text with the lines between the `<!-- name:begin -->` and `<!-- name:end -->` lines replaced by block."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    lines = text.splitlines(keepends=True)
    begins = [i for i, x in enumerate(lines) if x.strip() == begin]
    ends = [i for i, x in enumerate(lines) if x.strip() == end]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise FigureError(f"{where}: expected one '{begin}' line followed by one '{end}' line, "
                          f"found {len(begins)} and {len(ends)}")
    # a blank line before the end marker ends the table for every markdown renderer
    return "".join(lines[:begins[0] + 1]) + block.rstrip("\n") + "\n\n" + "".join(lines[ends[0]:])


def update_readme(report_path: Path, readme: Path, config: Path | None = None) -> bool:
    """Rewrite readme's demo block from report_path; return whether the file changed."""
    if not report_path.is_file():
        raise FigureError(f"{report_path}: no report: run `make demo` first (it writes runs/demo/report.json)")
    try:
        report = json.loads(report_path.read_text())
    except json.JSONDecodeError as e:
        raise FigureError(f"{report_path}: not valid JSON ({e})") from None
    if not readme.is_file():
        raise FigureError(f"{readme}: not found")
    return _rewrite(readme, render_table(report, _relative(report_path, readme), config), "demo-table")


def copy_block(markdown: Path, readme: Path, name: str) -> bool:
    """Put a generated markdown file (e.g. the bench's priority.md) into readme's block `name`."""
    if not markdown.is_file():
        raise FigureError(f"{markdown}: not found: run the benchmark that writes it first")
    note = f"From `{_relative(markdown, readme)}`, written by `make readme-figures` (benchmarks/readme_table.py), do not edit by hand.\n\n"
    return _rewrite(readme, note + markdown.read_text(), name)


def _relative(path: Path, readme: Path) -> str:
    """`path` as the README names it: relative to the README's folder when it lies below it."""
    try:
        return str(path.resolve().relative_to(readme.resolve().parent))
    except ValueError:
        return str(path)


def _rewrite(readme: Path, block: str, name: str) -> bool:
    old = readme.read_text()
    new = replace_block(old, block, str(readme), name)
    if new == old:
        return False
    write_text_atomic(readme, new)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, default=ROOT / "runs" / "demo" / "report.json")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml",
                        help="for the config name and seed when the report does not carry them")
    parser.add_argument("--block", nargs=2, action="append", default=[], metavar=("NAME", "MARKDOWN"),
                        help="also copy a generated markdown file into the README block NAME (repeatable)")
    args = parser.parse_args(argv)
    try:
        changed = update_readme(args.report, args.readme, args.config)
        print(f"{args.readme}: demo table {'rewritten' if changed else 'already up to date'} from {args.report}")
        for name, path in args.block:
            changed = copy_block(Path(path), args.readme, name)
            print(f"{args.readme}: block {name} {'rewritten' if changed else 'already up to date'} from {path}")
    except FigureError as e:
        print(f"readme_table: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
