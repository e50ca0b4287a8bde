"""Multi-node stages as Kubeflow Trainer TrainJobs: the manifest the kubeflow SDK sends, the wait /
fail / timeout logic, and the job's launch command run for real (torchrun, one CPU node)."""
import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from nmtrec.components.common.cluster import ClusterConfig
from nmtrec.components.train.trainjob import (TrainJobError, build_request, job_name, launch_command, run_trainjob,
                                train_stage_on_trainjob)

CLUSTER = {"gpu_image": "reg.example.com/nmtrec-gpu:1", "gpus": 8, "nodes": 2, "shared_pvc": "rwx",
           "shared_mount": "/mnt/shared", "shm_size": "32Gi", "image_pull_secrets": ["regcred"],
           "node_selector": {"pool": "h100"},
           "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
           "resources": {"train": {"cpu_request": "32", "memory_request": "256Gi"}},
           "trainjob": {"timeout_s": 7200, "poll_s": 5}}

# the torch-distributed ClusterTrainingRuntime as Kubeflow Trainer installs it (trimmed)
RUNTIME = yaml.safe_load("""
apiVersion: trainer.kubeflow.org/v1alpha1
kind: ClusterTrainingRuntime
metadata: {name: torch-distributed, labels: {trainer.kubeflow.org/framework: torch}}
spec:
  mlPolicy: {numNodes: 1, torch: {numProcPerNode: auto}}
  template:
    spec:
      replicatedJobs:
      - name: node
        template:
          metadata: {labels: {trainer.kubeflow.org/trainjob-ancestor-step: trainer}}
          spec:
            template:
              spec:
                containers: [{name: node, image: pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime}]
""")


class FakeCustomApi:
    """The Kubernetes custom-objects API: serves the runtime, records created objects."""

    def __init__(self):
        self.created = []

    def get_namespaced_custom_object(self, *args, **kwargs):
        from kubernetes.client import ApiException
        raise ApiException(status=404)  # no namespaced TrainingRuntime: falls back to the cluster one

    def get_cluster_custom_object(self, group, version, plural, name, async_req=False):
        assert (plural, name) == ("clustertrainingruntimes", "torch-distributed")
        return SimpleNamespace(get=lambda timeout=None: RUNTIME)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append((namespace, plural, body))


def test_trainjob_manifest_from_the_kubeflow_sdk(monkeypatch):
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.trainer import TrainerClient
    from kubeflow.trainer.backends.kubernetes.backend import KubernetesBackend
    from kubernetes.client import Configuration

    monkeypatch.setattr(KubernetesBackend, "verify_backend", lambda self: None)  # a version probe only

    # a real TrainerClient whose Kubernetes API is faked (no cluster here)
    conf = Configuration(host="http://127.0.0.1:9")
    client = TrainerClient(KubernetesBackendConfig(namespace="ml", client_configuration=conf))
    api = client.backend.custom_api = FakeCustomApi()
    cc = ClusterConfig.model_validate(CLUSTER)
    cmd = launch_command('{"tasks": ["like"]}', 1, "/mnt/shared/j/dataset", "/mnt/shared/j/checkpoint",
                         "/mnt/shared/j/previous")
    req = build_request(cc, job_name("Run 42/abc", 1), cmd)
    name = client.train(runtime=req.runtime, trainer=req.trainer, options=req.options)

    (namespace, plural, body), = api.created
    assert (namespace, plural, name) == ("ml", "trainjobs", "nmtrec-run-42-abc-s2")
    assert body["kind"] == "TrainJob" and body["metadata"]["name"] == name
    spec = body["spec"]
    assert spec["runtimeRef"]["name"] == "torch-distributed"
    assert spec["runtimeRef"]["kind"] == "ClusterTrainingRuntime"
    assert spec["activeDeadlineSeconds"] == 7200
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 2 and trainer["image"] == "reg.example.com/nmtrec-gpu:1"
    assert trainer["command"] == ["torchrun", "-m", "nmtrec.components.train.launch", '{"tasks": ["like"]}', "1",
                                  "/mnt/shared/j/dataset", "/mnt/shared/j/checkpoint", "/mnt/shared/j/previous"]
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8", "cpu": "32", "memory": "256Gi"}
    (patch,) = spec["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = rjob["template"]["spec"]["template"]["spec"]
    assert rjob["name"] == "node"
    assert {"name": "nmtrec-shared", "persistentVolumeClaim": {"claimName": "rwx"}} in pod["volumes"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}} in pod["volumes"]
    assert pod["containers"][0]["name"] == "node"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    assert {"name": "nmtrec-shared", "mountPath": "/mnt/shared"} in pod["containers"][0]["volumeMounts"]
    assert pod["nodeSelector"] == {"pool": "h100"} and pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


class FakeTrainer:
    """TrainerClient stand-in: statuses play out one per poll."""

    def __init__(self, statuses, logs=("epoch 1", "epoch 2"), existing=None):
        self.statuses, self.logs, self.existing = list(statuses), list(logs), existing
        self.trained, self.deleted, self.log_calls = [], [], 0

    def get_job(self, name):
        if self.existing is None:
            raise RuntimeError(f"TrainJob {name} not found")
        return SimpleNamespace(name=name, status=self.existing)

    def train(self, runtime, trainer, options):
        self.trained.append((runtime, trainer, options))
        return next(o.name for o in options if type(o).__name__ == "Name")

    def wait_for_job_status(self, name, status, timeout, polling_interval):
        while self.statuses:
            s = self.statuses.pop(0)
            if s in status:
                return SimpleNamespace(name=name, status=s)
        raise TimeoutError(f"Timeout waiting for TrainJob {name}")

    def get_job_logs(self, name, follow=False):
        self.log_calls += 1
        yield from self.logs

    def get_job_events(self, name):
        return [SimpleNamespace(message="node-1 OOMKilled")]

    def delete_job(self, name):
        self.deleted.append(name)


def _request():
    cc = ClusterConfig.model_validate(CLUSTER)
    return cc, build_request(cc, "nmtrec-r-s1", ["torchrun", "-m", "nmtrec.components.train.launch"])


def test_run_trainjob_streams_logs_and_completes():
    cc, req = _request()
    client, lines = FakeTrainer(["Created", "Running", "Running", "Complete"]), []
    job = run_trainjob(client, cc, req, echo=lines.append)
    assert job.status == "Complete" and len(client.trained) == 1 and client.log_calls == 1
    assert "epoch 1" in lines and "epoch 2" in lines


def test_failed_trainjob_fails_the_step_with_its_events():
    cc, req = _request()
    client = FakeTrainer(["Created", "Running", "Failed"])
    with pytest.raises(TrainJobError, match=r"TrainJob nmtrec-r-s1 ended with status Failed: node-1 OOMKilled"):
        run_trainjob(client, cc, req, echo=lambda s: None)


def test_trainjob_timeout_deletes_the_job():
    cc, req = _request()
    client = FakeTrainer(["Created", "Running", "Running"])
    with pytest.raises(TrainJobError, match=r"did not finish within cluster.trainjob.timeout_s=7200s"):
        run_trainjob(client, cc, req, echo=lambda s: None)
    assert client.deleted == ["nmtrec-r-s1"]


def test_retried_step_attaches_to_running_job_and_resubmits_failed_one():
    cc, req = _request()
    attach = FakeTrainer(["Running", "Complete"], existing="Running")
    run_trainjob(attach, cc, req, echo=lambda s: None)
    assert attach.trained == []  # no second job for the same stage
    again = FakeTrainer(["Running", "Complete"], existing="Failed")
    run_trainjob(again, cc, req, echo=lambda s: None)
    assert again.deleted == ["nmtrec-r-s1"] and len(again.trained) == 1
    new_name = next(o.name for o in again.trained[0][2] if type(o).__name__ == "Name")
    assert new_name.startswith("nmtrec-r-s1-") and new_name != "nmtrec-r-s1"


def test_completed_job_without_checkpoint_fails(tmp_path):
    cc = ClusterConfig.model_validate({**CLUSTER, "shared_mount": str(tmp_path / "shared")})
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "feature_spec.json").write_text("{}")
    with pytest.raises(TrainJobError, match="wrote no checkpoint"):
        train_stage_on_trainjob(cc, "{}", 0, str(tmp_path / "ds"), str(tmp_path / "out"), None, "run-1",
                                client=FakeTrainer(["Running", "Complete"]))
    # the dataset was staged on the shared volume for the job's nodes
    datasets = list((tmp_path / "shared" / "nmtrec" / "datasets").iterdir())
    assert len(datasets) == 1 and (datasets[0] / "feature_spec.json").is_file()


def test_step_stages_inputs_on_the_shared_volume_and_returns_the_jobs_checkpoint(tmp_path):
    cc = ClusterConfig.model_validate({**CLUSTER, "shared_mount": str(tmp_path / "shared")})
    for name, marker in (("ds", "feature_spec.json"), ("prev", "stage.json")):
        (tmp_path / name).mkdir()
        (tmp_path / name / marker).write_text(name)

    class JobWritesCheckpoint(FakeTrainer):
        def train(self, runtime, trainer, options):
            cmd = next(o.command for o in options if type(o).__name__ == "TrainerCommand")
            data, out, prev = cmd[5], cmd[6], cmd[7]  # what every node of the job sees
            assert open(f"{data}/feature_spec.json").read() == "ds" and open(f"{prev}/stage.json").read() == "prev"
            os.makedirs(out)
            open(f"{out}/stage.json", "w").write('{"task": "click"}')
            return super().train(runtime, trainer, options)

    client = JobWritesCheckpoint(["Running", "Complete"])
    train_stage_on_trainjob(cc, "{}", 1, str(tmp_path / "ds"), str(tmp_path / "out"), str(tmp_path / "prev"),
                            "run-1", client=client)
    assert json.loads((tmp_path / "out" / "stage.json").read_text()) == {"task": "click"}
    cmd = next(o.command for o in client.trained[0][2] if type(o).__name__ == "TrainerCommand")
    assert all(p.startswith(str(tmp_path / "shared")) for p in cmd[5:8])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_launch_command_trains_the_stage_like_a_single_process(tiny_cfg, tiny_dataset, tmp_path):
    """The job's command, run as the torch-distributed runtime would on one node (PET_* variables),
    gives the same stage as the in-process reference."""
    from nmtrec.components.train.stage import run_stage
    from nmtrec.components.common.step_inputs import Step, step_inputs_json

    data = str(tiny_dataset / "dataset")
    ref = run_stage(tiny_cfg, 0, data, str(tmp_path / "ref"))
    cmd = launch_command(step_inputs_json(tiny_cfg, Step("stage", 0)), 0, data, str(tmp_path / "job"), None)
    env = {**os.environ, "PET_NNODES": "1", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "0",
           "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(_free_port())}
    cmd[0] = os.path.join(os.path.dirname(sys.executable), "torchrun")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads((tmp_path / "job" / "stage.json").read_text())
    assert got["tasks"] == ["like"] and got["model_hash"] == ref.model_hash
    assert got["frozen_optima"]["like"] == pytest.approx(ref.frozen_optima["like"], rel=1e-5)
