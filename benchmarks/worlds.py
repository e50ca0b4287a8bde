"""The worlds of `nmtrec bench priority`: planted synthetic settings x world seeds, plus the real Tenrec
sbr extract when ../shared/data holds it. A helper of benchmarks/priority.py (not a benchmark itself).

A world changes only the data section of the bench's one config, all but its split, which every world
shares (the online setting also the model's head and the loss: the paper's one shared score trained
pairwise). Settings differ in size, positive rates and how much the like and click factors share
(`conflict`, the correlation of the two factor sets; the like logit shares conflict^2 of its variance
with click's):
- dense:    few users/items, frequent likes (6%), independent factors: the tasks compete for the
            8-dim embeddings (12 latent dimensions to hold), joint training should cost like;
- sparse:   more users/items, a long tail (popularity 1.2), rare likes (2.5%), weakly shared factors
            (0.3): little data per id, click's 8x more positives dominate a joint model;
- transfer: small, rare likes (3%) on factors shared with click (conflict 0.9): click's labels teach
            like, so joint training helps the top task (positive transfer);
- online:   the paper's online form, one shared score + pairwise loss, partly shared factors (0.5).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

WORLD_SEEDS = (1, 2, 3, 4)

# data.synthetic of each setting (the rest of SyntheticConfig at its default)
SETTINGS: dict[str, dict] = {
    "dense": {"synthetic": {"rows": 60_000, "users": 60, "items": 120, "latent_dim": 6, "click_rate": 0.3,
                            "like_rate": 0.06, "conflict": 0.0}},
    "sparse": {"synthetic": {"rows": 80_000, "users": 150, "items": 300, "latent_dim": 6, "click_rate": 0.2,
                             "like_rate": 0.025, "conflict": 0.3, "popularity": 1.2}},
    "transfer": {"synthetic": {"rows": 40_000, "users": 80, "items": 160, "latent_dim": 4, "click_rate": 0.24,
                               "like_rate": 0.03, "conflict": 0.9}},
    "online": {"synthetic": {"rows": 60_000, "users": 80, "items": 160, "latent_dim": 6, "click_rate": 0.3,
                             "like_rate": 0.05, "conflict": 0.5}},
}
ONLINE = {"model": {"head": "shared_score"}, "train": {"loss": "pairwise"}}
TINY = {"rows": 4_000, "users": 40, "items": 60}
SBR_FILE = "sbr_data_1M_very_small.csv"


@dataclass(frozen=True)
class World:
    name: str
    setting: str
    seed: int
    data: dict
    extra: dict = field(default_factory=dict)  # model/train/tasks overrides (online: head + loss)
    source: str | None = None  # a real file's path (its size goes into the data key)

    def overrides(self) -> dict:
        return {"data": self.data, **self.extra}

    def source_file(self) -> list | None:
        if not self.source:
            return None
        p = Path(self.source)
        return [p.name, p.stat().st_size] if p.is_file() else [p.name, None]

    def cost(self) -> float:
        """Rough relative training cost (rows), for scheduling the biggest units first."""
        syn = self.data.get("synthetic", {})
        return float(syn.get("rows", 25_000)) * (2.0 if self.extra else 1.0)


def family(tiny: bool = False, world_seeds=WORLD_SEEDS) -> list[World]:
    """Every setting x world seed (other seeds than the bench's: worlds nobody tuned anything to)."""
    worlds = []
    for setting, data in SETTINGS.items():
        for seed in world_seeds:
            syn = {**data["synthetic"], **(TINY if tiny else {})}
            worlds.append(World(name=f"{setting}-{seed}", setting=setting, seed=seed,
                                data={"source": "synthetic", "synthetic": syn},
                                extra=ONLINE if setting == "online" else {}))
    return worlds


def shared_data(root: Path) -> Path:
    """$NMTREC_SHARED_DATA, else the first shared/data above the checkout (as tests/conftest.py)."""
    if os.environ.get("NMTREC_SHARED_DATA"):
        return Path(os.environ["NMTREC_SHARED_DATA"])
    for parent in root.resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return root.parent / "shared" / "data"


def sbr_world(root: Path, tiny: bool = False) -> World | None:
    """The real Tenrec sbr extract (25k rows, every row a click): like > share; None when absent.
    Its quirks (configs/tenrec.yaml): no history columns, `\\N` categories; ids seen once share the OOV row."""
    path = shared_data(root) / SBR_FILE
    if not path.is_file() or tiny:
        return None
    return World(name="sbr", setting="sbr", seed=7,
                 data={"source": "tenrec", "path": str(path), "min_count": 2},
                 extra={"tasks": ["like", "share"]}, source=str(path))
