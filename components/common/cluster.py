"""The `cluster` config section: how the pipeline's pods run on Kubernetes (image, resources, GPUs,
scheduling, retries, pipeline root, multi-node TrainJob). kfp.local ignores all of it.

Nothing here enters a step's cache key: the factory drops this section from the config JSON each
step receives, so moving a pipeline to bigger machines keeps its cached stages.
"""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CPU = r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$"  # "500m", "2", "1.5"
MEMORY = r"^[0-9]+(\.[0-9]+)?(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"  # "8Gi", "512M"
DURATION = r"^[0-9]+s$"  # kfp retry backoff, e.g. "60s"
STEP_KINDS = ("default", "generate", "preprocess", "train", "evaluate")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    cpu_request: Optional[str] = Field(None, pattern=CPU)
    cpu_limit: Optional[str] = Field(None, pattern=CPU)
    memory_request: Optional[str] = Field(None, pattern=MEMORY)
    memory_limit: Optional[str] = Field(None, pattern=MEMORY)


class Toleration(_Strict):
    key: Optional[str] = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: Optional[str] = None
    effect: Optional[Literal["NoExecute", "NoSchedule", "PreferNoSchedule"]] = None
    toleration_seconds: Optional[int] = None


class TrainJobConfig(_Strict):
    """Kubeflow Trainer settings for multi-node stages (cluster.nodes > 1)."""
    runtime: str = "torch-distributed"
    namespace: Optional[str] = None  # default: the namespace the pipeline step runs in
    timeout_s: int = Field(24 * 3600, gt=0)
    poll_s: int = Field(30, gt=0)

    @model_validator(mode="after")
    def _poll_below_timeout(self):
        if self.poll_s >= self.timeout_s:
            raise ValueError(f"poll_s ({self.poll_s}) must be below timeout_s ({self.timeout_s})")
        return self


class ClusterConfig(_Strict):
    image: str = "ghcr.io/nmtrec/nmtrec-cpu:0.1.0"
    gpu_image: str = "ghcr.io/nmtrec/nmtrec-gpu:0.1.0"  # train steps when gpus > 0
    image_pull_secrets: list[str] = []
    # where KFP keeps artifacts (object store); unset: the KFP installation's default root
    pipeline_root: Optional[str] = None
    # per step kind; `default` applies to every step, the other kinds override it key by key
    resources: dict[Literal[STEP_KINDS], Resources] = {}
    gpus: int = Field(0, ge=0)  # per train pod (per node); torchrun --nproc_per_node
    accelerator: str = "nvidia.com/gpu"
    nodes: int = Field(1, ge=1)  # > 1: each stage submits a Kubeflow Trainer TrainJob
    shm_size: Optional[str] = Field("8Gi", pattern=MEMORY)  # /dev/shm (NCCL) on train pods
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    # KFP retry policy of train steps on the cluster (a retried stage resumes from its last checkpoint,
    # see train.checkpoint_every / train.resume_root); None: train.retries
    retries: Optional[int] = Field(None, ge=0)
    retry_backoff: str = Field("60s", pattern=DURATION)
    # shared ReadWriteMany volume that the train step and the TrainJob's nodes both mount (nodes > 1)
    shared_pvc: Optional[str] = None
    shared_mount: str = "/mnt/nmtrec"
    trainjob: TrainJobConfig = TrainJobConfig()

    @field_validator("pipeline_root")
    @classmethod
    def _object_store(cls, v):
        if v is not None and not re.match(r"^(s3|gs|minio)://[^/]+", v):
            raise ValueError(f"must be an object store URI (s3://, gs:// or minio://), got {v!r}")
        return v

    @model_validator(mode="after")
    def _multi_node(self):
        if self.nodes > 1 and self.gpus < 1:
            raise ValueError(f"nodes is {self.nodes} but gpus is {self.gpus}: multi-node training "
                             "(a TrainJob) needs gpus >= 1 per node")
        if self.nodes > 1 and not self.shared_pvc:
            raise ValueError(f"nodes is {self.nodes}: set shared_pvc (a ReadWriteMany PVC) so the "
                             "TrainJob's nodes can read the dataset and write the checkpoint")
        if not self.shared_mount.startswith("/"):
            raise ValueError(f"shared_mount must be an absolute path, got {self.shared_mount!r}")
        return self

    def resources_for(self, kind: str) -> Resources:
        base = self.resources.get("default", Resources()).model_dump(exclude_none=True)
        own = self.resources.get(kind, Resources()).model_dump(exclude_none=True) if kind != "default" else {}
        return Resources(**{**base, **own})
