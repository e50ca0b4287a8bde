"""Multi-node stages: a pipeline step that submits a Kubeflow Trainer TrainJob (runtime
`torch-distributed`) running the same stage entry point under torchrun on every node, waits for it
with a timeout, streams node 0's logs, and fails the step when the job fails.

KFP artifacts live in an object store that the TrainJob's pods cannot see, so the step stages its
inputs on a shared ReadWriteMany PVC (`cluster.shared_pvc`), which both the step and the job's nodes
mount, and copies the finished checkpoint from there into its output artifact.
"""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nmtrec.components.common.cluster import ClusterConfig
from nmtrec.components.common.files import atomic_dir
from nmtrec.components.train import launch

log = logging.getLogger("nmtrec.trainjob")
SHARED_VOLUME = "nmtrec-shared"
SHM_VOLUME = "dshm"
NODE_CONTAINER = "node"  # the trainer container/replicated job of the torch-distributed runtime


class TrainJobError(RuntimeError):
    """The TrainJob failed or did not finish in time; the message names the job."""


def launch_command(config_json: str, stage: int, dataset_dir: str, out_dir: str,
                   previous_dir: str | None) -> list[str]:
    """torchrun reads nodes, processes per node, rank and master from the PET_* variables that the
    torch-distributed runtime sets on each node."""
    cmd = ["torchrun", "-m", launch.MODULE, config_json, str(stage), dataset_dir, out_dir]
    return cmd + ([previous_dir] if previous_dir else [])


def run_label(run_id: str) -> str:
    """DNS-1035 label: lowercase, starts with a letter, short enough for a stage suffix."""
    return "nmtrec-" + (re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:40] or "run")


def job_name(run_id: str, stage: int) -> str:
    return f"{run_label(run_id)}-s{stage + 1}"


@dataclass
class TrainJobRequest:
    runtime: str
    trainer: object  # kubeflow.trainer.CustomTrainerContainer
    options: list


def build_request(cc: ClusterConfig, name: str, command: list[str]) -> TrainJobRequest:
    from kubeflow.trainer import CustomTrainerContainer
    from kubeflow.trainer.options import (ActiveDeadlineSeconds, ContainerPatch, JobSpecPatch, JobTemplatePatch,
                                          Name, PodSpecPatch, PodTemplatePatch, ReplicatedJobPatch, RuntimePatch,
                                          TrainerCommand, TrainingRuntimeSpecPatch, JobSetTemplatePatch,
                                          JobSetSpecPatch)

    res = cc.resources_for("train")
    per_node = {cc.accelerator: str(cc.gpus)}
    if res.cpu_request:
        per_node["cpu"] = res.cpu_request
    if res.memory_request:
        per_node["memory"] = res.memory_request
    volumes = [{"name": SHARED_VOLUME, "persistentVolumeClaim": {"claimName": cc.shared_pvc}}]
    mounts = [{"name": SHARED_VOLUME, "mountPath": cc.shared_mount}]
    if cc.shm_size:
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": cc.shm_size}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    pod = PodSpecPatch(
        volumes=volumes,
        containers=[ContainerPatch(name=NODE_CONTAINER, volume_mounts=mounts)],
        image_pull_secrets=[{"name": s} for s in cc.image_pull_secrets] or None,
        node_selector=dict(cc.node_selector) or None,
        tolerations=[_toleration(t) for t in cc.tolerations] or None,
    )
    patch = RuntimePatch(training_runtime_spec=TrainingRuntimeSpecPatch(template=JobSetTemplatePatch(
        spec=JobSetSpecPatch(replicated_jobs=[ReplicatedJobPatch(name=NODE_CONTAINER, template=JobTemplatePatch(
            spec=JobSpecPatch(template=PodTemplatePatch(spec=pod))))]))))
    # the runtime's numProcPerNode "auto" gives torchrun one process per GPU of resources_per_node
    trainer = CustomTrainerContainer(image=cc.gpu_image, num_nodes=cc.nodes, resources_per_node=per_node)
    options = [Name(name=name), TrainerCommand(command=command), patch,
               ActiveDeadlineSeconds(seconds=cc.trainjob.timeout_s)]
    return TrainJobRequest(cc.trainjob.runtime, trainer, options)


def _toleration(t) -> dict:
    keys = {"key": "key", "operator": "operator", "value": "value", "effect": "effect",
            "toleration_seconds": "tolerationSeconds"}
    return {keys[k]: v for k, v in t.model_dump().items() if v is not None}


def run_trainjob(client, cc: ClusterConfig, request: TrainJobRequest, echo: Callable[[str], None] = print):
    """Submit, stream node 0's logs, wait until Complete; TrainJobError on failure or timeout."""
    name = _submit(client, request)
    echo(f"TrainJob {name}: {cc.nodes} nodes x {cc.gpus} {cc.accelerator}, runtime {request.runtime}")
    timeout, poll = cc.trainjob.timeout_s, cc.trainjob.poll_s
    deadline = time.monotonic() + timeout
    try:
        job = client.wait_for_job_status(name, status={"Running", "Complete", "Failed"}, timeout=timeout,
                                          polling_interval=poll)
        if job.status == "Running":
            try:
                for line in client.get_job_logs(name, follow=True):
                    echo(line.rstrip("\n"))
            except RuntimeError as e:  # log stream broken (pod restarted): the status still decides
                echo(f"log stream of TrainJob {name} ended: {e}")
        left = int(deadline - time.monotonic())  # one time budget for the whole job
        if left <= poll:
            raise TimeoutError(name)
        job = client.wait_for_job_status(name, status={"Complete", "Failed"}, timeout=left, polling_interval=poll)
    except TimeoutError:
        client.delete_job(name)  # free the nodes
        raise TrainJobError(f"TrainJob {name} did not finish within cluster.trainjob.timeout_s={timeout}s "
                            "(deleted)") from None
    if job.status != "Complete":
        events = _events(client, name)
        raise TrainJobError(f"TrainJob {name} ended with status {job.status}" + (f": {events}" if events else ""))
    echo(f"TrainJob {name} complete")
    return job


def _submit(client, request: TrainJobRequest) -> str:
    """A retried step attaches to its still running (or finished) job instead of starting a second one;
    a failed one is deleted and submitted again under a fresh name."""
    from kubeflow.trainer.options import Name

    name = next(o.name for o in request.options if isinstance(o, Name))
    try:
        existing = client.get_job(name)
    except RuntimeError:  # not found
        existing = None
    if existing is not None and existing.status in ("Created", "Running", "Complete"):
        return name
    if existing is not None:
        client.delete_job(name)
        name = f"{name}-{uuid.uuid4().hex[:4]}"
        options = [Name(name=name) if isinstance(o, Name) else o for o in request.options]
        request = TrainJobRequest(request.runtime, request.trainer, options)
    return client.train(runtime=request.runtime, trainer=request.trainer, options=request.options)


def _events(client, name: str) -> str:
    try:
        return "; ".join(e.message for e in client.get_job_events(name)[-5:])
    except Exception:  # events are a diagnostic extra, never the reason a step fails
        return ""


def stage_on_shared(src: str | None, dest: Path) -> str | None:
    """Copy an input artifact onto the shared volume (once: a retried step reuses it)."""
    if src is None:
        return None
    if not dest.exists():
        with atomic_dir(dest) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    return str(dest)


def train_stage_on_trainjob(cc: ClusterConfig, config_json: str, stage: int, dataset_dir: str, out_dir: str,
                            previous_dir: str | None, job_key: str, client=None) -> None:
    """Core of the multi-node step; the output checkpoint ends up in out_dir. `job_key` names the job and
    its work folder (the same for a retried step); the dataset is copied once for every stage reading it."""
    root = Path(cc.shared_mount) / "nmtrec"
    work = root / run_label(job_key) / f"stage-{stage + 1}"
    work.mkdir(parents=True, exist_ok=True)
    (root / "datasets").mkdir(exist_ok=True)
    data = stage_on_shared(dataset_dir, root / "datasets" / hashlib.sha256(dataset_dir.encode()).hexdigest()[:12])
    prev = stage_on_shared(previous_dir, work / "previous")
    ckpt = work / "checkpoint"
    if client is None:
        from kubeflow.common.types import KubernetesBackendConfig
        from kubeflow.trainer import TrainerClient

        client = TrainerClient(KubernetesBackendConfig(namespace=cc.trainjob.namespace))
    request = build_request(cc, job_name(job_key, stage), launch_command(config_json, stage, data, str(ckpt), prev))
    run_trainjob(client, cc, request)
    if not ckpt.is_dir():
        raise TrainJobError(f"TrainJob {job_name(job_key, stage)} completed but wrote no checkpoint at {ckpt}")
    shutil.copytree(ckpt, out_dir, dirs_exist_ok=True)
