"""`nmtrec run` as a person meets it (issue 15): a short console, one clear error per bad input
(message once, step named, exit 2, no report that looks complete), degenerate labels refused before
training, NaN-free reports, and resume after kill -9 by default."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import tiny_config

NMTREC = str(Path(sys.executable).with_name("nmtrec"))
HEADER = "user_id,item_id,click,follow,like,share,video_category,watching_times,gender,age\n"


def _rows(n: int, seed: int = 0, click=None) -> str:
    """Tenrec ctr_data-like rows without hist columns (features.bags: {}); `click`: a constant click."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        c = rnd.random() < 0.3 if click is None else click
        like = int(c and rnd.random() < 0.3)
        out.append(f"{rnd.randrange(1, 60)},{rnd.randrange(1, 80)},{int(c)},0,{like},0,{rnd.randrange(0, 5)},"
                   f"{rnd.randrange(0, 4)},{rnd.randrange(1, 3)},{rnd.randrange(1, 6)}\n")
    return "".join(out)


GOOD = _rows(400)
HALF = GOOD[:GOOD.index("\n", len(GOOD) // 2) + 1]  # lines 2..201 after the header


def _tenrec_config(tmp_path: Path, data_path: Path, **over) -> Path:
    over = dict(over)
    data = {"source": "tenrec", "path": str(data_path), **over.pop("data", {})}
    cfg = tiny_config(name="bad-input", methods=["nmt"], features={"bags": {}, "bag_tables": {}}, data=data, **over)
    f = tmp_path / "cfg.yaml"
    f.write_text(yaml.safe_dump(json.loads(cfg.to_json())))
    return f


def _write(path: Path, content) -> Path:
    if content is None:
        return path
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# (case, file content, config overrides, the message's parts, the step it names or None: before the run)
CASES = [
    ("truncated row", HEADER + HALF + "4,13,1,0,0\n" + GOOD[len(HALF):], {},
     [f"in.csv: line {HALF.count(chr(10)) + 2}: expected 10 fields", "got 5"], "preprocess"),
    ("bad label value", HEADER + GOOD + "4,13,1,0,3,0,1,2,1,4\n", {},
     ["in.csv: line 402, column 'like'", "expected a 0/1 label, got 3"], "preprocess"),
    ("label not a number", HEADER + GOOD + "4,13,yes,0,0,0,1,2,1,4\n", {},
     ["in.csv: line 402, column 'click'", "expected a 0/1 label, got 'yes'"], "preprocess"),
    ("non-UTF-8 bytes", (HEADER + GOOD).encode() + b"4,1\xff\xfe3,1,0,0,0,1,2,1,4\n", {},
     ["in.csv: line 402, column 'item_id'", "expected an integer id"], "preprocess"),
    ("missing label column", HEADER.replace("share", "shared") + GOOD, {},
     ["in.csv: line 1: no column(s) ['share']", "labels of the tenrec format", "data.labels"], None),
    ("empty file", "", {}, ["in.csv: line 1: empty file"], None),
    ("header only", HEADER, {}, ["in.csv: line 2: no data rows after the header"], None),
    ("missing file", None, {}, ["in.csv: input file not found"], None),
    ("task not a label", HEADER + GOOD, {"tasks": ["purchase", "click"]},
     ["tasks: 'purchase' is not a label of the tenrec data", "click, follow, like, share"], None),
    ("task not in data.labels", HEADER + GOOD, {"data": {"labels": ["like", "click"]}, "tasks": ["like", "share"]},
     ["tasks: 'share' is not in data.labels ['like', 'click']"], None),
    ("constant label", HEADER + _rows(600, click=1), {},
     ["task 'click': label 'click' has no negatives in split(s) train (", "rows positive), valid (",
      "before training"], "preprocess"),
]


@pytest.mark.parametrize("case,content,over,needles,step", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_clear_error(tmp_path, capsys, case, content, over, needles, step):
    from nmtrec.pipelines.cli import main

    data = _write(tmp_path / "in.csv", content)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")  # an earlier run's report must not survive a failed run
    began = time.perf_counter()
    rc = main(["run", "--config", str(_tenrec_config(tmp_path, data, **over)), "--output", str(out)])
    seconds = time.perf_counter() - began
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert rc == 2, text
    first = needles[0]
    assert text.count(first) == 1, text  # the message once
    for n in needles:
        assert n in captured.err, (n, captured.err)
    assert "Traceback" not in text and "RuntimeError" not in text and "executor_input" not in text, text
    assert not (out / "report.json").exists()
    if step is None:  # found before the first step: nothing ran
        assert not (out / "logs").exists() and seconds < 15, (seconds, text)
    else:
        assert f"step {step!r} failed" in captured.err
        log = out / "logs" / f"{step}.log"
        assert f"step log: {log}" in captured.err or case == "constant label"
        assert not any(p.name.startswith("stage-") for p in (out / "logs").iterdir())  # no training started


def test_degenerate_label_is_refused_by_the_stage_itself(tiny_dataset, tiny_cfg, tmp_path):
    """On a cluster there is no runner-side check: the stage step refuses before training."""
    from nmtrec.components.common.feature_spec import FeatureSpec, LabelError
    from nmtrec.components.train.launch import train_stage_main

    spec = FeatureSpec.read(tiny_dataset / "dataset")
    assert set(spec.split_positives) == {"train", "valid", "test"}
    assert spec.label_problems(["like", "click"]) == []
    broken = tmp_path / "ds"
    broken.mkdir()
    d = spec.to_dict()
    d["split_positives"]["valid"]["click"] = 0
    FeatureSpec.from_dict(d).write(broken)
    with pytest.raises(LabelError, match=r"stage 2: task 'click': label 'click' has no positives in split\(s\) valid \(0 of"):
        train_stage_main(tiny_cfg, 1, str(broken), str(tmp_path / "out"), None)


def test_undefined_metric_is_null_with_a_reason():
    from nmtrec.components.evaluate.report import null_undefined
    from nmtrec.components.evaluate.scoring import summary_table

    labels = np.array([[0, 1], [1, 1], [0, 1]], dtype=np.float32)
    report = {"tasks": ["like", "click"],
              "methods": {"nmt": {"auc": {"like": 0.7, "click": float("nan")}, "logloss": {"like": 0.3, "click": 0.1},
                                  "gauc": {"like": float("nan"), "click": float("nan")}},
                          "single_task": {"auc": {"like": 0.6, "click": None}, "logloss": {"like": 0.3, "click": None},
                                          "gauc": {"like": 0.5, "click": None}}},
              "stages": [{"valid_auc": {"click": float("nan")}}]}
    out = null_undefined(report, labels)
    text = json.dumps(out, allow_nan=False)  # valid JSON: raises on any NaN left
    assert json.loads(text)["methods"]["nmt"]["auc"]["click"] is None
    why = out["null_metrics"]
    assert "only positives in the test split (3 of 3 rows positive)" in why["methods.*.auc.click"]
    assert "no user has both classes of 'like'" in why["methods.*.gauc.like"]
    assert why["stages[0].valid_auc.click"].startswith("not a finite number")
    table = summary_table(out)
    assert "null*" in table and "* click AUC is null: 'click' has only positives" in table
    assert table.splitlines()[3].split()[-1] == "-"  # single_task has no click head: not applicable


# -- a real run: console, then kill -9 during stage 2 and rerun ------------------------------------------------

def _reads(path: Path, needle: str) -> bool:
    try:
        return needle in path.read_bytes().decode(errors="replace")
    except OSError:
        return False


def _run_config(root: Path) -> Path:
    # the default NMT settings (paired constraints, a warm-up epoch): a kill can land inside the warm-up
    cfg = tiny_config(name="resume15", methods=["nmt", "single_task"], train={"checkpoint_every": 4})
    f = root / "cfg.yaml"
    f.write_text(yaml.safe_dump(json.loads(cfg.to_json())))
    return f


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted `nmtrec run` (its console captured)."""
    root = tmp_path_factory.mktemp("ref")
    cfg = _run_config(root)
    p = subprocess.run([NMTREC, "run", "--config", str(cfg), "--output", str(root / "out")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return root, cfg, p


def test_console_is_short_and_names_report_and_logs(reference):
    root, _, p = reference
    lines = p.stdout.splitlines()
    assert len(lines) <= 30, p.stdout  # 5 steps, the table and the paths (demo: 13 steps, < 100 lines)
    assert p.stderr == "", p.stderr
    for hidden in ("executor_input", "KFP Executor", "Warning", "it/s]", "Streamed logs"):
        assert hidden not in p.stdout, hidden
    out = root / "out"
    assert f"HTML report: {out / 'report.html'}" in p.stdout
    assert f"step logs ({out / 'logs'}/)" in p.stdout
    for step in ("generate-synthetic", "preprocess", "stage-1-like", "stage-2-click", "evaluate"):
        assert any(line.strip().startswith(("✓ " + step, "= " + step)) for line in lines), (step, p.stdout)
        assert (out / "logs" / f"{step}.log").is_file()
    assert "KFP Executor" in (out / "logs" / "stage-2-click.log").read_text()  # the full stream is in the log
    assert not (out / ".resume").exists()  # a completed run leaves no resume state


def test_rerun_after_kill_9_resumes_stage_2_by_default(reference, tmp_path):
    ref_root, cfg, _ = reference
    want = json.loads((ref_root / "out" / "report.json").read_text())
    # the killed run shares the reference's cache (stage 1 reused); its stage 2 must train again
    root = ref_root
    stage2 = [p for p in (ref_root / "out" / "kfp").glob("*/train-stage-2/checkpoint")]
    assert stage2
    for p in stage2:
        import shutil

        shutil.rmtree(p)
    out = root / "killed"
    cmd = [NMTREC, "run", "--config", str(cfg), "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if list((out / ".resume").glob("stage2-*/last/manifest.json")):
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.1)
        else:
            pytest.fail("stage 2 never wrote a resume checkpoint")
    finally:
        proc.kill()  # kill -9 of `nmtrec run` only: its step must die with it (PR_SET_PDEATHSIG)
        proc.wait()
    # the kernel kills the step at once (PR_SET_PDEATHSIG); on a loaded machine its exit takes a moment
    deadline = time.time() + 30
    while True:
        orphans = [c for c in Path("/proc").glob("[0-9]*/cmdline") if _reads(c, str(out / "kfp"))]
        if not orphans or time.time() > deadline:
            break
        time.sleep(0.5)
    assert not orphans, "a step outlived the killed run"
    assert list((out / ".resume").glob("stage2-*/last/manifest.json")), "the killed run's step cleaned up"
    assert not (out / "report.json").exists()

    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    line = next(x for x in p.stdout.splitlines() if "stage-2-click" in x and "trained" in x)
    assert "resumed at step" in line, p.stdout
    step = int(line.split("resumed at step")[1].split()[0])
    assert step > 0 and step % 4 == 0
    assert any("stage-1-like" in x and "reused from cache" in x for x in p.stdout.splitlines()), p.stdout
    assert not (out / ".resume").exists()
    got = json.loads((out / "report.json").read_text())
    assert got == want
