"""A process of `nmtrec bench scale`'s training (not a benchmark itself): run under torchrun, trains one
stage as the pipeline's stage step does, then writes this process's peak RSS.

    python -m torch.distributed.run --standalone --nproc_per_node=N benchmarks/scale_worker.py CONFIG_JSON DATASET OUT RSS_DIR
"""
import json
import resource
import sys
from pathlib import Path

import torch.distributed as dist

from nmtrec.components.common.config import Config
from nmtrec.components.train.distributed import close_process_group
from nmtrec.components.train.launch import train_stage_main

if __name__ == "__main__":
    cfg_json, dataset, out, rss_dir = sys.argv[1:5]
    train_stage_main(Config.from_json(Path(cfg_json).read_text()), 0, dataset, out, None)
    rank = dist.get_rank()
    close_process_group()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    (Path(rss_dir) / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "peak_rss_mib": peak_kib / 1024}))
