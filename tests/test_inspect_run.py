"""`nmtrec runs` and `nmtrec inspect` on small real runs: each stage trained or reused with the checkpoint
that `nmtrec run --from-checkpoint` accepts, the stage figures and the methods' AUC as report.json has
them, failed / killed / older runs, and one-line errors for missing or garbled folders."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from nmtrec.pipelines.cli import main
from nmtrec.pipelines.inspect_run import read_run
from nmtrec.pipelines.local import run_local

# like_rate 0.2: share has positives in every split of 3,000 rows (as in test_reuse.py)
SMALL = {"data": {"synthetic": {"rows": 3000, "users": 200, "items": 300, "like_rate": 0.2}},
         "train": {"max_epochs": 1}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs beside each other (one kfp.local cache): like > click, then like > click > share, whose
    stages 1-2 come from the cache."""
    root = tmp_path_factory.mktemp("inspect")
    two = tiny_config(name="inspect-two", methods=["nmt", "single_task"], **SMALL)
    three = two.model_copy(update={"name": "inspect-three", "tasks": ["like", "click", "share"]})
    run_local(two, root / "two", stream=open(os.devnull, "w"))
    run_local(three, root / "three", stream=open(os.devnull, "w"))
    return root, two, three


def only(paths) -> Path:
    found = sorted(paths)
    assert len(found) == 1, found
    return found[0]


def stage_dirs(folder: Path, n: int) -> list[Path]:
    """Stage k's checkpoint as kfp.local wrote it: kfp/<run>/train-stage[-k]/checkpoint."""
    return [only(folder.glob(f"kfp/*/train-stage{'' if k == 1 else f'-{k}'}/checkpoint")) for k in range(1, n + 1)]


def printed_checkpoints(out: str) -> dict[int, Path]:
    return {int(m[1]): Path(m[2]).resolve() for m in re.finditer(r"^  stage (\d+) \(\w+\): (\S+)$", out, re.M)}


def table_rows(out: str) -> dict[str, list[str]]:
    """Rows of rich tables (│-separated cells) keyed by their first cell."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0]:
            rows.setdefault(cells[0], cells)
    return rows


@pytest.mark.slow
def test_inspect_shows_each_stage_as_the_report_has_it(runs, capsys):
    root, two, _ = runs
    assert main(["inspect", str(root / "two")]) == 0
    out = capsys.readouterr().out
    report = json.loads((root / "two" / "report.json").read_text())
    assert f"run 'inspect-two' in {root / 'two'}: like > click; complete" in out
    assert printed_checkpoints(out) == {k + 1: p.resolve() for k, p in enumerate(stage_dirs(root / "two", 2))}
    rows = table_rows(out)
    for k, (task, stage) in enumerate(zip(two.tasks, report["stages"]), 1):
        row = rows[str(k)]
        assert row[1:3] == [task, "trained"]
        assert row[3] == f"{stage['frozen_optima'][task]:.4f}" and row[4] == f"{stage['valid_auc'][task]:.4f}"
    stage2 = report["stages"][1]
    assert rows["2"][5] == f"like {stage2['lambda_final']['like']:.2f}"
    for col, key in ((6, "constraint_audit"), (7, "test_audit")):
        (audit,) = stage2[key]
        assert rows["2"][col].startswith("like ") and rows["2"][col].endswith("BREACH" if audit["breach"] else "ok")
        assert f"{audit['mean_loss_change']:+.3g}" in rows["2"][col] and f"{audit['tolerance']:.3g}" in rows["2"][col]
    for method, result in report["methods"].items():
        assert rows[method][1:] == [f"{result['auc'][t]:.4f}" if result["auc"].get(t) is not None else "–"
                                    for t in two.tasks]
    assert rows["oracle"][1:] == [f"{report['oracle_auc'][t]:.4f}" for t in two.tasks]


@pytest.mark.slow
def test_printed_checkpoints_are_accepted_by_from_checkpoint(runs, capsys):
    from nmtrec.pipelines.reuse import resolve_start

    root, two, three = runs
    assert main(["inspect", str(root / "two")]) == 0
    ckpt = printed_checkpoints(capsys.readouterr().out)
    start = resolve_start(three, str(ckpt[2]), first_stage=str(ckpt[1]))
    assert (start.stages_done, Path(start.uri), Path(start.first_stage_uri)) == (2, ckpt[2], ckpt[1])
    start = resolve_start(two, str(ckpt[1]))
    assert (start.stages_done, Path(start.uri)) == (1, ckpt[1])


@pytest.mark.slow
def test_printed_checkpoint_and_dataset_export(runs, tmp_path, capsys):
    """A reused stage's printed checkpoint (in the run that trained it) with the printed dataset."""
    pytest.importorskip("nmtrec.components.serve.export")
    root, _, _ = runs
    assert main(["inspect", str(root / "three")]) == 0
    out = capsys.readouterr().out
    dataset = re.search(r"^dataset \(nmtrec export --dataset\): (\S+)$", out, re.M)[1]
    assert Path(dataset).resolve() == only((root / "two").glob("kfp/*/preprocess-dataset/dataset")).resolve()
    ckpt = printed_checkpoints(out)[2]
    assert main(["export", "--checkpoint", str(ckpt), "--dataset", dataset, "--output", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "export.json").read_text())["tasks"] == ["like", "click"]


@pytest.mark.slow
def test_reused_stages_point_at_the_cached_checkpoints(runs, capsys):
    root, _, three = runs
    view = read_run(root / "three")
    assert view.status == "complete" and view.tasks == three.tasks
    assert [s.how for s in view.stages] == ["reused", "reused", "trained"]
    # stages 1-2 are the first run's artifacts (nothing of them was written under three/), stage 3 is its own
    first = stage_dirs(root / "two", 2)
    assert [Path(s.checkpoint).resolve() for s in view.stages[:2]] == [p.resolve() for p in first]
    assert Path(view.stages[2].checkpoint).resolve() == only((root / "three").glob("kfp/*/train-stage-3/checkpoint"))
    report = json.loads((root / "three" / "report.json").read_text())
    assert [s.details for s in view.stages] == report["stages"]
    assert main(["runs", str(root)]) == 0
    rows = table_rows(capsys.readouterr().out)
    by_name = {r[1]: r for r in rows.values() if len(r) == 6}
    assert by_name["inspect-two"][2:5] == ["like > click", "complete", "2 trained"]
    assert by_name["inspect-three"][2:5] == ["like > click > share", "complete", "2 reused, 1 trained"]


@pytest.mark.slow
def test_imported_stages_of_a_from_checkpoint_run(runs):
    from nmtrec.pipelines.reuse import resolve_start

    root, two, _ = runs
    follow = two.model_copy(update={"name": "inspect-follow", "tasks": ["like", "click", "follow"]})
    first, second = stage_dirs(root / "two", 2)
    start = resolve_start(follow, str(second), first_stage=str(first))
    run_local(follow, root / "follow", start=start, stream=open(os.devnull, "w"))
    view = read_run(root / "follow")
    assert [s.how for s in view.stages] == ["imported", "imported", "trained"]
    assert [Path(s.checkpoint).resolve() for s in view.stages[:2]] == [first.resolve(), second.resolve()]
    assert Path(view.stages[2].checkpoint).resolve() == only((root / "follow").glob("kfp/*/train-stage/checkpoint"))


@pytest.mark.slow
def test_failed_run_names_its_step(tmp_path, capsys):
    from test_run_console import GOOD, HALF, HEADER, _tenrec_config

    data = tmp_path / "in.csv"
    data.write_text(HEADER + HALF + "4,13,1,0,0\n" + GOOD[len(HALF):])
    assert main(["run", "--config", str(_tenrec_config(tmp_path, data)), "--output", str(tmp_path / "out")]) == 2
    capsys.readouterr()
    view = read_run(tmp_path / "out")
    assert (view.status, view.failed_step) == ("failed", "preprocess")
    assert "expected 10 fields" in view.error
    assert [s.how for s in view.stages] == ["not run", "not run"]
    assert main(["inspect", str(tmp_path / "out")]) == 0
    assert "failed step 'preprocess': " in capsys.readouterr().out
    assert main(["runs", str(tmp_path)]) == 0
    assert "│ failed (preprocess) │" in capsys.readouterr().out


@pytest.mark.slow
def test_killed_and_older_runs(runs, tmp_path):
    root, _, _ = runs
    copy = tmp_path / "two"
    shutil.copytree(root / "two", copy)
    record = json.loads((copy / "run.json").read_text())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (copy / "run.json").write_text(json.dumps({**record, "status": "running", "pid": gone.pid}))
    assert read_run(copy).status == "stopped"  # its process is gone: killed or interrupted
    (copy / "run.json").write_text(json.dumps({**record, "status": "running", "pid": os.getpid()}))
    assert read_run(copy).status == "running"
    # a run killed in stage 2 (its steps never recorded): stage 1's checkpoint is found in its kfp/ run
    shutil.rmtree(stage_dirs(copy, 2)[1].parent)
    (copy / "run.json").write_text(json.dumps({**record, "status": "running", "pid": gone.pid, "steps": []}))
    view = read_run(copy)
    assert [(s.how, s.checkpoint) for s in view.stages] == [("trained", str(stage_dirs(copy, 1)[0])), ("pending", None)]
    shutil.rmtree(copy)
    shutil.copytree(root / "two", copy)
    # a run written before run.json: the stages that ran are found in its newest kfp/ run
    (copy / "run.json").unlink()
    view = read_run(copy)
    assert (view.recorded, view.status, view.name) == (False, "complete", "inspect-two")
    assert [Path(s.checkpoint) for s in view.stages] == stage_dirs(copy, 2)
    assert [s.how for s in view.stages] == ["trained", "trained"]


@pytest.mark.parametrize("setup, words", [
    (lambda d: None, "no such folder"),
    (lambda d: d.mkdir(), "not a run folder (expected report.json, run.json or kfp/"),
    (lambda d: (d.mkdir(), (d / "report.json").write_text('{"tasks": ["like",\n')), "report.json: line 2, column 1: not valid JSON"),
    (lambda d: (d.mkdir(), (d / "report.json").write_text('[1, 2]')), "report.json: expected a JSON object"),
    (lambda d: (d.mkdir(), (d / "run.json").write_text('{"tasks": "like", "steps": []}')),
     "run.json: key 'tasks': expected the list of task names, got 'like'"),
])
def test_bad_run_folder_is_one_line_and_exit_2(tmp_path, capsys, setup, words):
    folder = tmp_path / "run"
    setup(folder)
    assert main(["inspect", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and str(folder) in err, err
    assert "Traceback" not in err


def test_runs_of_a_missing_folder_exits_2(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert f"nmtrec: error: {tmp_path / 'nope'}: no such folder\n" == capsys.readouterr().err
    assert main(["runs", str(tmp_path)]) == 0
    assert "no run folders under" in capsys.readouterr().out


def test_runs_finds_nested_run_folders_once(tmp_path):
    for name in ("a", "b/c", "b/c2/d"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "report.json").write_text('{"tasks": ["like"]}')
    (tmp_path / "b" / "c" / "kfp" / "x").mkdir(parents=True)  # nothing is searched inside a run folder
    (tmp_path / "latest").symlink_to(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    from nmtrec.pipelines.inspect_run import find_runs

    assert find_runs(tmp_path) == [tmp_path / "a", tmp_path / "b" / "c", tmp_path / "b" / "c2" / "d"]
    assert find_runs(tmp_path / "a") == [tmp_path / "a"]


def test_inspect_needs_neither_torch_nor_kfp(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"tasks": ["like"], "methods": {"nmt": {"auc": {"like": 0.75}}},
                                                 "stages": [{"task": "like", "frozen_optima": {"like": 0.1}}]}))
    (run / "config.yaml").write_text("tasks: [like]\n")  # the effective config, when the run saved one
    code = ("import sys; from nmtrec.pipelines.cli import main; rc = main(['inspect', sys.argv[1]]); "
            "assert 'torch' not in sys.modules and 'kfp' not in sys.modules, 'heavy import'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "0.7500" in done.stdout and "0.1000" in done.stdout
    assert f"config: {run / 'config.yaml'}" in done.stdout


def test_audit_text_names_the_auc_where_a_ranking_task_is_judged_by_it():
    from nmtrec.pipelines.inspect_run import audit_text

    by_auc = {"task": "like", "mean_loss_change": -0.02, "tolerance": 0.01, "breach": True, "judged_by": "auc",
              "auc_change_paired": -0.0151, "auc_tolerance": 0.0094}
    by_loss = {"task": "like", "mean_loss_change": 0.001, "tolerance": 0.002, "breach": False, "judged_by": "loss"}
    assert audit_text([by_auc]) == "like AUC -0.0151 < -0.0094 BREACH"
    assert audit_text([by_loss]) == "like +0.001 ≤ 0.002 ok"
