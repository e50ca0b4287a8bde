"""Apply the `cluster` config section to a pipeline's tasks with kfp and kfp-kubernetes.

`apply_cluster(cc)` is called once at the end of the pipeline function and walks every task created
so far, so steps that other modules add (baseline methods, ...) get the same treatment by kind:
a component whose name contains "train" is a train step (GPUs, /dev/shm, retries).
"""
from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import pipeline_context

from nmtrec.components.common.cluster import ClusterConfig

SHM_VOLUME = "dshm"


def step_kind(component_name: str) -> str:
    """default | generate | preprocess | train | trainjob | evaluate, from the component's name."""
    if "trainjob" in component_name:
        return "trainjob"  # submits and watches a TrainJob: no GPU of its own
    for kind in ("train", "preprocess", "generate", "evaluate"):
        if kind in component_name:
            return kind
    return "default"


def apply_to_task(task, kind: str, cc: ClusterConfig) -> None:
    # a trainjob step's pod only waits: the TrainJob's nodes get the train resources
    res = cc.resources_for("default" if kind == "trainjob" else kind)
    if res.cpu_request:
        task.set_cpu_request(res.cpu_request)
    if res.cpu_limit:
        task.set_cpu_limit(res.cpu_limit)
    if res.memory_request:
        task.set_memory_request(res.memory_request)
    if res.memory_limit:
        task.set_memory_limit(res.memory_limit)
    if cc.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(cc.image_pull_secrets))
    for key, value in cc.node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for tol in cc.tolerations:
        kubernetes.add_toleration(task, **tol.model_dump())
    if kind in ("train", "trainjob") and cc.retries is not None:
        # a lost pod is retried; the stage resumes from its last periodic checkpoint
        task.set_retry(cc.retries, backoff_duration=cc.retry_backoff, backoff_factor=2.0)
    if kind == "train":
        if cc.gpus:
            task.set_accelerator_type(cc.accelerator).set_accelerator_limit(cc.gpus)
        if cc.shm_size:  # NCCL and DataLoader workers need more than the container's 64 MiB default
            kubernetes.empty_dir_mount(task, volume_name=SHM_VOLUME, mount_path="/dev/shm", medium="Memory",
                                       size_limit=cc.shm_size)
    if cc.shared_pvc and kind in ("train", "trainjob"):
        kubernetes.mount_pvc(task, pvc_name=cc.shared_pvc, mount_path=cc.shared_mount)


def apply_cluster(cc: ClusterConfig | None) -> None:
    """Every task of the pipeline being defined (call inside the @dsl.pipeline function)."""
    if cc is None:
        return
    for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
        if task.container_spec is None:  # importers: nothing runs in a pod
            continue
        apply_to_task(task, step_kind(task.component_spec.name), cc)
