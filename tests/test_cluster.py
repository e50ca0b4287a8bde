"""The `cluster` section lands in the compiled pipeline YAML (resources, GPUs, /dev/shm, scheduling,
retries, pipeline root) and bad values fail with the key named."""
import json

import pytest
import yaml

from nmtrec.pipelines.cli import main

GPU_CLUSTER = {
    "image": "reg.example.com/nmtrec-cpu:1", "gpu_image": "reg.example.com/nmtrec-gpu:1",
    "image_pull_secrets": ["regcred"], "pipeline_root": "s3://bucket/nmtrec",
    "resources": {"default": {"cpu_request": "1", "memory_request": "4Gi"},
                  "train": {"cpu_request": "8", "cpu_limit": "16", "memory_request": "32Gi", "memory_limit": "64Gi"}},
    "gpus": 4, "accelerator": "nvidia.com/gpu", "shm_size": "16Gi",
    "node_selector": {"pool": "h100"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "retries": 3, "retry_backoff": "30s",
}


def compile_config(tmp_path, raw: dict) -> dict:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "p.yaml"
    assert main(["compile", "--config", str(cfg_file), "--output", str(out)]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))  # pipeline spec [+ platform spec]
    return {k: v for d in docs for k, v in d.items()}


def executor(spec: dict, task: str) -> tuple[dict, dict]:
    """(container spec, kubernetes platform spec) of a DAG task."""
    comp = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    label = spec["components"][comp]["executorLabel"]
    return (spec["deploymentSpec"]["executors"][label]["container"],
            spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"][label])


def test_three_task_gpu_config_compiles_to_chained_gpu_stages(tmp_path):
    spec = compile_config(tmp_path, {"name": "gpu3", "tasks": ["like", "click", "share"], "cluster": GPU_CLUSTER})
    dag = spec["root"]["dag"]["tasks"]
    stages = ["train-stage", "train-stage-2", "train-stage-3"]
    assert [dag[t]["taskInfo"]["name"] for t in stages] == ["stage-1-like", "stage-2-click", "stage-3-share"]
    # chained by checkpoint artifacts
    for prev, cur in zip(stages, stages[1:]):
        assert dag[cur]["inputs"]["artifacts"]["previous"]["taskOutputArtifact"] == {
            "outputArtifactKey": "checkpoint", "producerTask": prev}
    assert dag["evaluate"]["inputs"]["artifacts"]["checkpoint"]["taskOutputArtifact"]["producerTask"] == stages[-1]
    assert spec["defaultPipelineRoot"] == "s3://bucket/nmtrec"
    for t in stages:
        container, k8s = executor(spec, t)
        assert container["image"] == "reg.example.com/nmtrec-gpu:1"
        res = container["resources"]
        assert res["accelerator"]["resourceType"] == "nvidia.com/gpu" and res["accelerator"]["resourceCount"] == "4"
        assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == ("8", "16")
        assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == ("32Gi", "64Gi")
        assert k8s["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi",
                                          "volumeName": "dshm"}]
        assert k8s["nodeSelector"]["labels"] == {"pool": "h100"}
        assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert [s["secretName"] for s in k8s["imagePullSecret"]] == ["regcred"]
        assert dag[t]["retryPolicy"]["maxRetryCount"] == 3
        assert dag[t]["retryPolicy"]["backoffDuration"] == "30s"
        # the stage's config input carries neither the cluster section nor the run name; nproc = gpus
        stage_cfg = yaml.safe_load(dag[t]["inputs"]["parameters"]["config_json"]["runtimeValue"]["constant"])
        assert stage_cfg["cluster"] is None and stage_cfg["name"] == "nmtrec" and stage_cfg["train"]["nproc"] == 1
        settings = json.loads(next(e["value"] for e in executor(spec, t)[0]["env"] if e["name"] == "NMTREC_RUN_SETTINGS"))
        assert settings["train.nproc"] == 4  # one process per GPU, a run setting
    # non-train steps: CPU image, default resources, no GPU, no /dev/shm, no retries
    container, k8s = executor(spec, "preprocess-dataset")
    assert container["image"] == "reg.example.com/nmtrec-cpu:1"
    assert "accelerator" not in container["resources"] and container["resources"]["resourceCpuRequest"] == "1"
    assert "emptyDirMounts" not in k8s and "retryPolicy" not in dag["preprocess-dataset"]


def test_cluster_section_does_not_change_step_inputs(tmp_path):
    """Moving to a cluster keeps every step's inputs (so KFP cache keys) of a plain config."""
    plain = compile_config(tmp_path, {"name": "a", "tasks": ["like", "click"]})
    gpu = compile_config(tmp_path, {"name": "b", "tasks": ["like", "click"],
                                    "cluster": {**GPU_CLUSTER, "gpus": 0}})
    for t in ("generate-synthetic", "preprocess-dataset", "train-stage", "train-stage-2", "evaluate"):
        assert plain["root"]["dag"]["tasks"][t]["inputs"] == gpu["root"]["dag"]["tasks"][t]["inputs"]


def test_multi_node_config_submits_trainjobs(tmp_path):
    spec = compile_config(tmp_path, {"name": "mn", "tasks": ["like", "click"], "cluster": {
        **GPU_CLUSTER, "nodes": 2, "shared_pvc": "nmtrec-rwx", "shared_mount": "/mnt/shared"}})
    dag = spec["root"]["dag"]["tasks"]
    assert {"train-stage-trainjob", "train-stage-trainjob-2"} <= set(dag)
    assert not any(t in dag for t in ("train-stage", "train-stage-2"))
    assert dag["train-stage-trainjob-2"]["inputs"]["artifacts"]["previous"]["taskOutputArtifact"][
        "producerTask"] == "train-stage-trainjob"
    container, k8s = executor(spec, "train-stage-trainjob")
    # the submitting pod needs no GPU; it shares the PVC with the job's nodes and is retried
    assert "accelerator" not in container.get("resources", {})
    assert k8s["pvcMount"][0]["constant"] == "nmtrec-rwx" and k8s["pvcMount"][0]["mountPath"] == "/mnt/shared"
    assert dag["train-stage-trainjob"]["retryPolicy"]["maxRetryCount"] == 3
    # the cluster section reaches the step with the run settings, outside its inputs (cache key)
    assert set(dag["train-stage-trainjob"]["inputs"]["parameters"]) == {"config_json", "stage"}
    settings = json.loads(next(e["value"] for e in container["env"] if e["name"] == "NMTREC_RUN_SETTINGS"))
    assert settings["cluster"]["nodes"] == 2 and settings["cluster"]["gpus"] == 4 and settings["train.nproc"] == 4


@pytest.mark.parametrize("cluster, key, words", [
    ({"gpu": 2}, "cluster.gpu", "Extra inputs"),
    ({"resources": {"trainer": {"cpu_request": "1"}}}, "cluster.resources.trainer", ""),
    ({"resources": {"train": {"memory_limit": "lots"}}}, "cluster.resources.train.memory_limit", "pattern"),
    ({"nodes": 2, "shared_pvc": "x"}, "cluster", "gpus is 0"),
    ({"nodes": 2, "gpus": 8}, "cluster", "shared_pvc"),
    ({"pipeline_root": "/data/root"}, "cluster.pipeline_root", "object store"),
    ({"tolerations": [{"effect": "Sometimes"}]}, "cluster.tolerations.0.effect", ""),
])
def test_bad_cluster_config_names_the_key(tmp_path, capsys, cluster, key, words):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({"tasks": ["like"], "cluster": cluster}))
    assert main(["compile", "--config", str(f), "--output", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{key}:" in err and words in err
    assert not (tmp_path / "p.yaml").exists()


def test_retries_from_train_section_and_cluster_override(tmp_path):
    base = {"name": "r", "tasks": ["like", "click"], "train": {"retries": 2}}
    spec = compile_config(tmp_path, {**base, "cluster": {"gpus": 1}})
    dag = spec["root"]["dag"]["tasks"]
    assert [dag[t]["retryPolicy"]["maxRetryCount"] for t in ("train-stage", "train-stage-2")] == [2, 2]
    spec = compile_config(tmp_path, {**base, "cluster": {"gpus": 1, "retries": 5}})
    dag = spec["root"]["dag"]["tasks"]
    assert [dag[t]["retryPolicy"]["maxRetryCount"] for t in ("train-stage", "train-stage-2")] == [5, 5]
    # retries never change what a stage computes, so they are not among its inputs (cache keys)
    plain = compile_config(tmp_path, {"name": "r", "tasks": ["like", "click"]})["root"]["dag"]["tasks"]
    assert dag["train-stage-2"]["inputs"]["parameters"]["config_json"] == \
        plain["train-stage-2"]["inputs"]["parameters"]["config_json"]
