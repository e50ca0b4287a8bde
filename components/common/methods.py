"""Method names of a config's `methods` list: the config validates them, training and the pipeline dispatch on them (no torch import)."""
from __future__ import annotations

JOINT = ("equal_weights", "famo", "weight_grid")  # one model trained on all tasks at once
STAGED = ("nmt", "famo+nmt")  # a chain of constrained stages after stage 1
SIMPLE = ("nmt", "single_task", "equal_weights", "famo", "famo+nmt")


def parse_method(name: str, num_tasks: int) -> tuple[str, list[float] | None]:
    """'weight_grid:0.9:0.1' -> ('weight_grid', [0.9, 0.1]); others -> (name, None)."""
    if name.startswith("weight_grid:"):
        try:
            w = [float(x) for x in name.split(":")[1:]]
        except ValueError:
            raise ValueError(f"method {name!r}: weights must be numbers, e.g. weight_grid:0.9:0.1") from None
        if len(w) != num_tasks or any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"method {name!r}: needs {num_tasks} non-negative weights (one per task)")
        return "weight_grid", w
    if name in SIMPLE:
        return name, None
    raise ValueError(f"unknown method {name!r}; expected one of {', '.join(SIMPLE)} "
                     f"or weight_grid:<w1>:<w2>...")


def is_joint(name: str) -> bool:
    return name.split(":")[0] in JOINT
