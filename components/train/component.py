"""KFP wrapper of one NMT stage. Stage k > 1 consumes stage k-1's checkpoint artifact."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output


def train_stage(config_json: str, stage: int, dataset: Input[Dataset], checkpoint: Output[Model],
                previous: Input[Model] = None, method: str = "nmt"):
    from nmtrec.components.common.logs import setup_logging
    from nmtrec.components.common.step_inputs import runtime_config
    from nmtrec.components.train.launch import train_stage_main

    setup_logging()
    meta = train_stage_main(runtime_config(config_json), stage, dataset.path, checkpoint.path,
                            previous.path if previous is not None else None, method=method)
    checkpoint.metadata.update({"task": meta.task, "tasks": meta.tasks,
                                "frozen_optima": meta.frozen_optima, "model_hash": meta.model_hash,
                                "method": meta.method})
