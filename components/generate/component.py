"""KFP wrapper: synthetic Tenrec-schema CSV (true probabilities as true_* columns) as a Dataset artifact."""
from kfp import dsl
from kfp.dsl import Dataset, Output


def generate_synthetic(config_json: str, raw: Output[Dataset]):
    import os

    from nmtrec.components.common.logs import setup_logging
    from nmtrec.components.common.step_inputs import runtime_config
    from nmtrec.components.generate.synthetic import SyntheticSpec, generate

    setup_logging()
    cfg = runtime_config(config_json)
    os.makedirs(raw.path, exist_ok=True)
    spec = SyntheticSpec(seed=cfg.seed, **cfg.data.synthetic.model_dump())
    rows = generate(spec, os.path.join(raw.path, "data.csv"))
    raw.metadata["rows"] = rows
