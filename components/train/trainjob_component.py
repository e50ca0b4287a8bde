"""KFP wrapper of a multi-node stage (cluster.nodes > 1): the step submits a Kubeflow Trainer TrainJob
that runs the stage on several nodes and turns its checkpoint into this step's output artifact."""
from kfp.dsl import Dataset, Input, Model, Output


def train_stage_trainjob(config_json: str, stage: int, dataset: Input[Dataset], checkpoint: Output[Model],
                         previous: Input[Model] = None):
    import hashlib

    from nmtrec.components.common.logs import setup_logging
    from nmtrec.components.common.step_inputs import runtime_config
    from nmtrec.components.train.checkpoint import read_meta
    from nmtrec.components.train.trainjob import TrainJobError, train_stage_on_trainjob

    setup_logging()
    cfg = runtime_config(config_json)  # the cluster section comes with the run settings
    if cfg.cluster is None:
        raise TrainJobError("a multi-node stage needs the run's cluster section (run settings missing)")
    # the job's name follows the step's identity, so a retried step finds its job again
    identity = "\0".join([config_json, str(stage), dataset.uri, previous.uri if previous is not None else ""])
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    train_stage_on_trainjob(cfg.cluster, cfg.to_json(), stage, dataset.path, checkpoint.path,
                            previous.path if previous is not None else None, key)
    meta = read_meta(checkpoint.path)
    checkpoint.metadata.update({"task": meta.task, "tasks": meta.tasks,
                                "frozen_optima": meta.frozen_optima, "model_hash": meta.model_hash})
