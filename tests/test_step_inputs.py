"""One definition of a step's inputs: for every step of a 3-task pipeline with every method, exactly the
steps that read a changed key (and the steps downstream of them, whose input artifacts change) get new
inputs; run-only settings change none. Read from the compiled pipeline, i.e. from what KFP's cache
key covers on a cluster: input parameters, image, command and arguments (not the environment)."""
import json

import pytest
import yaml
from kfp import compiler

from nmtrec.components.common.config import Config
from nmtrec.components.common.step_inputs import RUN_SETTINGS_ENV, Step, runtime_config, step_inputs_json
from nmtrec.pipelines.pipeline import build_pipeline

BASE = {"name": "keys", "seed": 1, "tasks": ["like", "click", "share"],
        "methods": ["nmt", "single_task", "equal_weights", "famo", "famo+nmt", "weight_grid:0.6:0.3:0.1"],
        "data": {"synthetic": {"rows": 5000}}}
GEN, PREP, EVAL = "generate", "preprocess", "evaluate"
S1, S2, S3, F2, F3 = "stage-1", "stage-2", "stage-3", "famo+nmt-2", "famo+nmt-3"
JOINT = ["joint:equal_weights", "joint:famo", "joint:weight_grid:0.6:0.3:0.1"]
TRAINING = [S1, S2, S3, F2, F3, *JOINT]
ALL = [GEN, PREP, *TRAINING, EVAL]
# the steps that read the changed key themselves
RUN_ONLY_CHANGES = [
    {"name": "other"}, {"train": {"threads": 2}}, {"train": {"checkpoint_every": 10}},
    {"train": {"resume_root": "/pvc/resume"}}, {"train": {"retries": 3}}, {"train": {"nproc": 2}},
    {"data": {"runner": "apache_beam.runners.dask.dask_runner.DaskRunner"}}, {"data": {"chunk_bytes": 1 << 16}},
    {"data": {"num_workers": 2}}, {"evaluate": {"nproc": 2}},
    {"cluster": {"resources": {"train": {"cpu_request": "8", "memory_limit": "64Gi"}}, "retries": 4,
                 "tolerations": [{"key": "gpu", "operator": "Exists"}], "node_selector": {"pool": "big"},
                 "shm_size": "16Gi", "pipeline_root": "s3://bucket/root"}},
]
CHANGES = [
    ({"seed": 2}, [GEN, PREP, *TRAINING]),
    ({"data": {"synthetic": {"rows": 6000}}}, [GEN]),
    ({"data": {"split": [0.7, 0.2, 0.1]}}, [PREP]),
    ({"data": {"min_count": 2}}, [PREP]),
    ({"features": {"sparse": ["user_id", "item_id", "video_category"]}}, [PREP, *TRAINING]),
    ({"model": {"embedding_dim": 8}}, TRAINING),
    ({"train": {"lr": 0.01}}, TRAINING),
    ({"train": {"max_epochs": 3}}, TRAINING),
    ({"nmt": {"tau": 0.1}}, [S2, S3, F2, F3]),
    ({"nmt": {"relative_tolerance": 0.02}}, [S2, S3, F2, F3]),
    ({"evaluate": {"batch_size": 1000}}, [EVAL]),
    ({"tasks": ["like", "click", "follow"]}, [S3, F3, *JOINT, EVAL]),
    ({"tasks": ["click", "like", "share"]}, [S1, S2, S3, F2, F3, *JOINT, EVAL]),
    ({"methods": ["nmt", "single_task", "equal_weights", "famo", "famo+nmt", "weight_grid:0.6:0.3:0.1",
                  "weight_grid:0.2:0.4:0.4"]}, [EVAL]),
    # a task's own settings reach the steps that train it and those below it, never the ones above
    ({"tasks": ["like", {"name": "click", "label": "follow"}, "share"]}, [S2, S3, F2, F3, *JOINT]),
    ({"tasks": ["like", "click", {"name": "share", "loss": "pairwise"}]}, [S3, F3, *JOINT]),
    ({"tasks": [{"name": "like", "label": "like"}, "click", "share"]}, []),  # the same as the bare name
]
DOWNSTREAM = {GEN: [PREP], PREP: TRAINING, S1: [S2, F2], S2: [S3], F2: [F3], S3: [EVAL], F3: [EVAL],
              **{j: [EVAL] for j in JOINT}, EVAL: []}
STEP_NAMES = {"generate-synthetic": GEN, "preprocess-dataset": PREP, "train-stage": S1, "train-stage-2": S2,
              "train-stage-3": S3, "train-stage-4": F2, "train-stage-5": F3, "evaluate-all": EVAL}


def merged(change: dict) -> Config:
    raw = json.loads(json.dumps(BASE))
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **{k: ({**raw[key][k], **v} if isinstance(v, dict) and isinstance(raw[key].get(k), dict)
                                           else v) for k, v in value.items()}}
        else:
            raw[key] = value
    return Config.model_validate(raw)


def step_keys(cfg: Config, tmp_path) -> dict[str, str]:
    """Step -> what KFP's cache key covers of it (parameters, image, command, args)."""
    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(build_pipeline(cfg), str(out))
    spec = next(yaml.safe_load_all(out.read_text()))  # a cluster section adds the platform spec as a 2nd document
    executors = spec["deploymentSpec"]["executors"]

    def container(task):
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        c = executors[label]["container"]
        return {k: c.get(k) for k in ("image", "command", "args")}

    keys = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        if "parameterIterator" in task:  # the joint baselines: one step per item of the loop
            inner = next(iter(spec["components"][task["componentRef"]["name"]]["dag"]["tasks"].values()))
            for item in json.loads(task["parameterIterator"]["items"]["raw"]):
                keys[f"joint:{item}"] = json.dumps([inner["inputs"]["parameters"]["config_json"], item, container(inner)])
        else:
            keys[STEP_NAMES[name]] = json.dumps([task["inputs"]["parameters"], container(task)], sort_keys=True)
    return keys


def invalidated(direct: list[str]) -> set[str]:
    out, todo = set(), list(direct)
    while todo:
        s = todo.pop()
        if s not in out:
            out.add(s)
            todo += DOWNSTREAM[s]
    return out


@pytest.fixture(scope="module")
def base_keys(tmp_path_factory):
    keys = step_keys(merged({}), tmp_path_factory.mktemp("base"))
    assert sorted(keys) == sorted(ALL)
    return keys


@pytest.mark.parametrize("change", RUN_ONLY_CHANGES, ids=lambda c: json.dumps(c)[:40])
def test_run_only_settings_change_no_step(base_keys, tmp_path, change):
    keys = step_keys(merged(change), tmp_path)
    assert [s for s in ALL if keys[s] != base_keys[s]] == []


@pytest.mark.parametrize("change,direct", CHANGES, ids=lambda c: json.dumps(c)[:40] if isinstance(c, dict) else "")
def test_a_change_reaches_exactly_the_steps_that_read_it(base_keys, tmp_path, change, direct):
    keys = step_keys(merged(change), tmp_path)
    changed = {s for s in keys if s in base_keys and keys[s] != base_keys[s]}
    assert changed == set(direct)
    # KFP also reruns whatever consumes a rerun step's new artifacts
    assert invalidated(direct) >= changed


def test_removing_other_methods_keeps_the_remaining_steps(base_keys, tmp_path):
    keys = step_keys(merged({"methods": ["nmt", "famo"]}), tmp_path)
    assert sorted(keys) == sorted([GEN, PREP, S1, S2, S3, "joint:famo", EVAL])
    assert [s for s in keys if s != EVAL and keys[s] != base_keys[s]] == []


def test_run_settings_reach_the_step_and_restore_the_config(monkeypatch):
    """What a step's inputs leave out comes back through the environment inside the step."""
    from nmtrec.components.common.step_inputs import run_settings_json

    cfg = merged({"train": {"threads": 2, "checkpoint_every": 5, "nproc": 2}, "data": {"runner": "X"},
                  "cluster": {"gpus": 3}})
    inputs = step_inputs_json(cfg, Step("stage", 1))
    assert Config.from_json(inputs).train.threads == 0
    monkeypatch.setenv(RUN_SETTINGS_ENV, run_settings_json(cfg))
    got = runtime_config(inputs)
    assert (got.train.threads, got.train.checkpoint_every, got.train.nproc) == (2, 5, 3)  # nproc: one per GPU
    assert got.cluster.gpus == 3 and got.tasks == ["like", "click"]
    monkeypatch.setenv(RUN_SETTINGS_ENV, json.dumps({"train.lr": 1.0}))
    with pytest.raises(ValueError, match="not a run-only setting"):
        runtime_config(inputs)


@pytest.mark.parametrize("task,direct", [(0, [S2, S3, F2, F3]), (1, [S3, F3]), (2, [])])
def test_a_tolerance_reaches_only_the_stages_it_constrains(tmp_path, task, direct):
    """Task j's tolerance bounds it in the stages below it (constraint_data valid reads it), not in its own
    stage, not in the joint baselines; the lowest task's constrains nothing."""
    base = merged({"nmt": {"constraint_data": "valid"}})
    tasks = list(BASE["tasks"])
    tasks[task] = {"name": tasks[task], "tolerance": 0.01}
    keys, before = step_keys(merged({"nmt": {"constraint_data": "valid"}, "tasks": tasks}), tmp_path), \
        step_keys(base, tmp_path)
    assert {s for s in ALL if keys[s] != before[s]} == set(direct)


def test_appending_a_task_with_settings_leaves_the_stages_above_unchanged():
    two = merged({"tasks": ["like", {"name": "clicked", "label": "click", "loss": "pairwise"}],
                  "methods": ["nmt"]})
    three = merged({"tasks": ["like", {"name": "clicked", "label": "click", "loss": "pairwise"},
                              {"name": "shared", "label": "share", "loss": "pairwise"}], "methods": ["nmt"]})
    assert [step_inputs_json(three, Step("stage", k)) for k in (0, 1)] == \
        [step_inputs_json(two, Step("stage", k)) for k in (0, 1)]
    third = Config.from_json(step_inputs_json(three, Step("stage", 2)))
    assert third.tasks == ["like", "clicked", "shared"]
    assert (third.label_of("clicked"), third.loss_of("shared"), third.label_of("like")) == ("click", "pairwise", "like")
    assert "shared" not in Config.from_json(step_inputs_json(three, Step("stage", 1))).task_settings
