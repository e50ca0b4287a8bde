"""Config -> PreprocessSpec glue shared by the KFP wrapper and the CLI."""
from __future__ import annotations

from components.preprocess.core import PreprocessSpec, run_preprocess
from pipelines.config import Config

# every label column of the Tenrec video files; preprocessing keeps them all, so appending a task
# to the priority list does not change (and re-run) this step
TENREC_LABELS = ["click", "follow", "like", "share"]


def preprocess_from_config(config_json: str, csv_path: str, out_dir: str) -> dict:
    cfg = Config.from_json(config_json)
    d, f = cfg.data, cfg.features
    spec = PreprocessSpec(sparse=f.sparse, bags=f.bags, bag_tables=f.bag_tables, labels=TENREC_LABELS,
                          split=d.split, min_count=d.min_count, seed=cfg.seed, chunk_bytes=d.chunk_bytes,
                          runner=d.runner, num_workers=d.num_workers)
    return run_preprocess(csv_path, out_dir, spec)
