"""KFP wrapper of one joint-training baseline (a step beside the NMT chain)."""
from kfp.dsl import Dataset, Input, Model, Output


def train_joint(config_json: str, method: str, dataset: Input[Dataset], checkpoint: Output[Model]):
    from nmtrec.components.common.feature_spec import FeatureSpec
    from nmtrec.components.common.logs import setup_logging
    from nmtrec.components.common.step_inputs import runtime_config
    from nmtrec.components.train.joint import run_joint

    setup_logging()
    cfg = runtime_config(config_json)
    FeatureSpec.read(dataset.path).check_labels(cfg.tasks, where=method, label_of=cfg.label_map())
    meta = run_joint(cfg, method, dataset.path, checkpoint.path)
    checkpoint.metadata.update({"method": method, "tasks": meta.tasks, "epochs": meta.epochs})
