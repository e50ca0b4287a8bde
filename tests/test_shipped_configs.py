"""Every config under configs/ loads and compiles (a new file is covered by the glob), its stages are
chained in priority order, and a config with a `cluster` section lands in the compiled YAML with its
GPUs, /dev/shm, tolerations, retries, images and, for several nodes, its TrainJob steps and shared PVC."""
import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from nmtrec.components.common.config import load_config
from nmtrec.pipelines.submit import compile_package

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _compile(path: Path, tmp_path: Path):
    cfg = load_config(path)
    out = compile_package(cfg, tmp_path / "pipeline.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))  # pipeline spec [+ platform spec]
    return cfg, {k: v for d in docs for k, v in d.items()}


def _dag_tasks(spec: dict):
    """(task name, task spec) of the root DAG and of every nested one (ParallelFor loops)."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return [(name, t) for dag in dags for name, t in dag["tasks"].items()]


def _executor(spec: dict, component: str) -> tuple[dict, dict]:
    """(container spec, kubernetes platform spec) of a component."""
    label = spec["components"][component]["executorLabel"]
    k8s = spec.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    return spec["deploymentSpec"]["executors"][label]["container"], k8s.get(label, {})


def _run_settings(container: dict) -> dict:
    return json.loads(next(e["value"] for e in container.get("env", []) if e["name"] == "NMTREC_RUN_SETTINGS"))


def test_the_cluster_examples_ship():
    names = {p.name for p in CONFIGS}
    assert {"cluster_gpu.yaml", "cluster_multinode.yaml", "demo.yaml"} <= names
    cluster = [load_config(p).cluster for p in CONFIGS if load_config(p).cluster is not None]
    assert any(c.gpus > 1 and c.nodes == 1 for c in cluster) and any(c.nodes > 1 for c in cluster)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_compiles_with_chained_stages(path, tmp_path):
    cfg, spec = _compile(path, tmp_path)
    dag = spec["root"]["dag"]["tasks"]
    stages = [name for name, t in dag.items() if t["taskInfo"]["name"].startswith("stage-")]
    names = sorted(dag[t]["taskInfo"]["name"] for t in stages)
    assert names == sorted(f"stage-{k + 1}-{task}" for k, task in enumerate(cfg.tasks))
    by_name = {dag[t]["taskInfo"]["name"]: t for t in stages}
    for k in range(1, len(cfg.tasks)):  # stage k+1 reads stage k's checkpoint
        cur = dag[by_name[f"stage-{k + 1}-{cfg.tasks[k]}"]]
        assert cur["inputs"]["artifacts"]["previous"]["taskOutputArtifact"] == {
            "outputArtifactKey": "checkpoint", "producerTask": by_name[f"stage-{k}-{cfg.tasks[k - 1]}"]}
    if cfg.cluster is not None and cfg.cluster.pipeline_root:
        assert spec["defaultPipelineRoot"] == cfg.cluster.pipeline_root


CLUSTER_CONFIGS = [p for p in CONFIGS if load_config(p).cluster is not None]


@pytest.mark.parametrize("path", CLUSTER_CONFIGS, ids=[p.name for p in CLUSTER_CONFIGS])
def test_cluster_config_settings_reach_the_compiled_yaml(path, tmp_path):
    cfg, spec = _compile(path, tmp_path)
    cc = cfg.cluster
    tasks = _dag_tasks(spec)
    train = [(n, t) for n, t in tasks if "train" in t["componentRef"]["name"]]
    assert train, "no train step"
    retries = cc.retries if cc.retries is not None else cfg.train.retries
    tolerations = [t.model_dump(exclude_none=True) for t in cc.tolerations]
    for name, task in train:
        component = task["componentRef"]["name"]
        container, k8s = _executor(spec, component)
        multi_node_stage = "trainjob" in component
        if retries:
            assert task["retryPolicy"]["maxRetryCount"] == retries, name
            assert task["retryPolicy"]["backoffDuration"] == cc.retry_backoff, name
        assert [{k: v for k, v in t.items() if k != "tolerationSeconds"} for t in k8s.get("tolerations", [])] \
            == tolerations, name
        assert k8s.get("nodeSelector", {}).get("labels", {}) == cc.node_selector, name
        settings = _run_settings(container)
        if cc.gpus:
            assert settings["train.nproc"] == cc.gpus == cfg.train.nproc, name  # one process per GPU
        if multi_node_stage:
            # the step only submits the TrainJob and waits: no GPU; its nodes read the shared PVC
            assert "accelerator" not in container.get("resources", {}), name
            assert [(m["constant"], m["mountPath"]) for m in k8s["pvcMount"]] == [(cc.shared_pvc, cc.shared_mount)]
            assert settings["cluster"]["nodes"] == cc.nodes and settings["cluster"]["gpus"] == cc.gpus
            assert settings["cluster"]["trainjob"]["runtime"] == cc.trainjob.runtime
            continue
        res = container["resources"]
        if cc.gpus:
            assert container["image"] == cc.gpu_image, name
            acc = res["accelerator"]
            assert (acc["resourceType"], acc["resourceCount"]) == (cc.accelerator, str(cc.gpus)), name
        train_res = cc.resources_for("train")
        if train_res.memory_limit:
            assert res["resourceMemoryLimit"] == train_res.memory_limit, name
        if cc.shm_size:
            assert {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": cc.shm_size, "volumeName": "dshm"} \
                in k8s["emptyDirMounts"], name
        if cc.shared_pvc:
            assert (cc.shared_pvc, cc.shared_mount) in [(m["constant"], m["mountPath"]) for m in k8s["pvcMount"]]
    if cc.nodes > 1:  # every stage is a TrainJob step
        stage_components = {t["componentRef"]["name"] for _, t in tasks if t["taskInfo"]["name"].startswith("stage-")}
        assert stage_components and all("trainjob" in c for c in stage_components)
    # the other steps: the CPU image, no GPU, no /dev/shm
    for name, task in tasks:
        component = task["componentRef"]["name"]
        if "train" in component or "executorLabel" not in spec["components"][component]:
            continue
        container, k8s = _executor(spec, component)
        assert container["image"] == cc.image, name
        assert "accelerator" not in container.get("resources", {}) and "emptyDirMounts" not in k8s, name


def test_shipped_cluster_configs_as_documented(tmp_path):
    """The two examples hold what the README promises of them (not only what their own keys say)."""
    gpu = load_config(ROOT / "configs" / "cluster_gpu.yaml").cluster
    assert gpu.nodes == 1 and gpu.gpus >= 2 and gpu.shm_size and gpu.tolerations and gpu.retries
    multi = load_config(ROOT / "configs" / "cluster_multinode.yaml")
    assert multi.cluster.nodes >= 2 and multi.cluster.shared_pvc and multi.cluster.retries
    # resume checkpoints on the volume every node mounts: a retried TrainJob continues from them
    assert multi.train.checkpoint_every and multi.train.resume_root.startswith(multi.cluster.shared_mount + "/")
