"""KFP wrappers of the Beam preprocessing: from a Dataset artifact (the synthetic step) or a file path."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Output


def preprocess_dataset(config_json: str, raw: Input[Dataset], dataset: Output[Dataset]):
    import os

    from nmtrec.components.common.logs import setup_logging
    from nmtrec.components.preprocess.from_config import preprocess_from_config

    setup_logging()
    spec = preprocess_from_config(config_json, os.path.join(raw.path, "data.csv"), dataset.path)
    dataset.metadata.update(spec.rows_per_split())
    dataset.metadata["bad_rows_skipped"] = spec.bad_rows_skipped


def preprocess_file(config_json: str, source_path: str, dataset: Output[Dataset]):
    from nmtrec.components.common.logs import setup_logging
    from nmtrec.components.preprocess.from_config import preprocess_from_config

    setup_logging()
    spec = preprocess_from_config(config_json, source_path, dataset.path)
    dataset.metadata.update(spec.rows_per_split())
    dataset.metadata["bad_rows_skipped"] = spec.bad_rows_skipped
