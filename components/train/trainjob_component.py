"""KFP wrapper of a multi-node stage (cluster.nodes > 1): the step submits a Kubeflow Trainer TrainJob
that runs the stage on several nodes and turns its checkpoint into this step's output artifact."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output


def train_stage_trainjob(config_json: str, cluster_json: str, stage: int, run_id: str, dataset: Input[Dataset],
                         checkpoint: Output[Model], previous: Input[Model] = None):
    from nmtrec.components.common.logs import setup_logging
    from nmtrec.components.train.checkpoint import read_meta
    from nmtrec.components.common.cluster import ClusterConfig
    from nmtrec.components.train.trainjob import train_stage_on_trainjob

    setup_logging()
    cc = ClusterConfig.model_validate_json(cluster_json)
    train_stage_on_trainjob(cc, config_json, stage, dataset.path, checkpoint.path,
                            previous.path if previous is not None else None, run_id)
    meta = read_meta(checkpoint.path)
    checkpoint.metadata.update({"task": meta["task"], "tasks": meta["tasks"],
                                "frozen_optima": meta["frozen_optima"], "model_hash": meta["model_hash"]})
