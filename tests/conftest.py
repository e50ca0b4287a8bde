import os
from pathlib import Path

import pytest

from nmtrec.components.common.config import Config

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """The real-data samples: $NMTREC_SHARED_DATA, else the first shared/data above the repo
    (/work/main -> /work/shared/data, and from a worktree such as /work/wt/data too)."""
    if os.environ.get("NMTREC_SHARED_DATA"):
        return Path(os.environ["NMTREC_SHARED_DATA"])
    for parent in ROOT.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return ROOT.parent / "shared" / "data"


SHARED_DATA = _shared_data()


def import_benchmark(name: str):
    """benchmarks.<name> from the checkout. The checkout is on sys.path only while importing: left there,
    its docker/ folder would shadow the `docker` package for the rest of the session (kfp.local imports it)."""
    import importlib
    import sys

    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(f"benchmarks.{name}")
    finally:
        sys.path.remove(str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")


def tiny_config(**overrides) -> Config:
    raw = {
        "name": "tiny", "seed": 3, "tasks": ["like", "click"],
        "data": {"synthetic": {"rows": 6000, "users": 300, "items": 400}, "chunk_bytes": 100_000},
        "model": {"embedding_dim": 8, "num_experts": 2, "expert_dims": [16], "tower_dims": [8]},
        # one thread: tiny matrices on a shared 2-core machine run many times faster than with two
        "train": {"batch_size": 256, "max_epochs": 2, "patience": 0, "threads": 1},
        # one training per stage (the default's variant doubles stage 2; tests/test_alternatives.py trains variants)
        "nmt": {"alternatives": []},
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return Config.model_validate(raw)


@pytest.fixture(scope="session")
def tiny_cfg():
    return tiny_config()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_cfg):
    """Synthetic CSV -> Beam preprocess, once per test session."""
    from nmtrec.components.generate.synthetic import SyntheticSpec, generate
    from nmtrec.components.preprocess.from_config import preprocess_from_config
    from nmtrec.components.common.step_inputs import Step, step_inputs_json

    root = tmp_path_factory.mktemp("tiny")
    generate(SyntheticSpec(seed=tiny_cfg.seed, **tiny_cfg.data.synthetic.model_dump()), root / "data.csv")
    preprocess_from_config(step_inputs_json(tiny_cfg, Step("preprocess")), str(root / "data.csv"), str(root / "dataset"))
    return root


@pytest.fixture(scope="session")
def tiny_stage2(tmp_path_factory, tiny_cfg, tiny_dataset):
    """Stages 1 and 2 trained on tiny_dataset, once per session; returns stage 2's checkpoint directory
    (tests/test_export.py and test_predict.py export and serve it)."""
    from nmtrec.components.train.stage import run_stage

    root = tmp_path_factory.mktemp("stages")
    data = str(tiny_dataset / "dataset")
    run_stage(tiny_cfg, 0, data, str(root / "s1"))
    run_stage(tiny_cfg, 1, data, str(root / "s2"), str(root / "s1"))
    return root / "s2"
