"""KFP wrapper: synthetic Tenrec-schema CSV (true probabilities as true_* columns) as a Dataset artifact."""
from kfp import dsl
from kfp.dsl import Dataset, Output


def generate_synthetic(config_json: str, raw: Output[Dataset]):
    import json
    import os

    from nmtrec.components.generate.synthetic import SyntheticSpec, generate
    from nmtrec.components.common.logs import setup_logging

    setup_logging()
    cfg = json.loads(config_json)
    os.makedirs(raw.path, exist_ok=True)
    spec = SyntheticSpec(seed=cfg["seed"], **cfg["data"]["synthetic"])
    rows = generate(spec, os.path.join(raw.path, "data.csv"))
    raw.metadata["rows"] = rows
