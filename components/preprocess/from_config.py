"""Config -> PreprocessSpec glue shared by the KFP wrapper and the CLI."""
from __future__ import annotations

from nmtrec.components.common.config import Config, DataConfig
from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.common.step_inputs import runtime_config
from nmtrec.components.preprocess.beam_pipeline import PreprocessSpec, run_preprocess
from nmtrec.components.preprocess.schemas import get_format


def label_columns(data: DataConfig) -> list[str]:
    """data.labels, else every label of the file format."""
    return list(data.labels) if data.labels is not None else list(get_format(data.source).default_labels)


def spec_from_config(cfg: Config) -> PreprocessSpec:
    # every label column of the format is kept by default, so appending a task to the priority list
    # does not change (and re-run) this step
    d, f = cfg.data, cfg.features
    return PreprocessSpec(sparse=f.sparse, bags=f.bags, bag_tables=f.bag_tables, labels=label_columns(d),
                          fmt=d.source, split=d.split, min_count=d.min_count, seed=cfg.seed,
                          chunk_bytes=d.chunk_bytes, runner=d.runner, num_workers=d.num_workers,
                          beam_options=d.beam_options, on_bad_rows=d.on_bad_rows,
                          negative_ratio=d.negative_ratio, sample_label=d.sample_label,
                          labels_configured=d.labels is not None)


def preprocess_from_config(config_json: str, csv_path: str, out_dir: str) -> FeatureSpec:
    """The step's core: its config inputs plus the run settings of its environment (runner, chunks)."""
    return run_preprocess(csv_path, out_dir, spec_from_config(runtime_config(config_json)))
