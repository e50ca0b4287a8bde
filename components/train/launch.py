"""Entry of a training stage: in this process for one worker, under torchrun for several."""
from __future__ import annotations

import json
import sys

from pipelines.config import Config


def train_stage_main(config_json: str, stage: int, dataset_dir: str, out_dir: str, previous_dir: str | None,
                     method: str = "nmt") -> dict:
    from components.train.core import run_stage

    cfg = Config.from_json(config_json)
    return run_stage(cfg, stage, dataset_dir, out_dir, previous_dir, method=method)


if __name__ == "__main__":  # python -m components.train.launch CONFIG_JSON STAGE DATASET OUT [PREVIOUS]
    args = sys.argv[1:]
    train_stage_main(args[0], int(args[1]), args[2], args[3], args[4] if len(args) > 4 else None)
    print(json.dumps({"ok": True}))
