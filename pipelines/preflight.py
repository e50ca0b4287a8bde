"""What `nmtrec run` checks before its first step, so that a mistake costs seconds, not a stage:

- every task's label column (its `label` setting, else its name) is one of data.labels when set, else
  a label of the data format (tenrec/synthetic: click, follow, like, share; tiktok: finish, like);
- the methods fit the task count (the config's own validation, components/common/config.py);
- a data file (tenrec/tiktok) exists, is not empty, has the header (or field count) of its format,
  the configured feature and label columns, and at least one data row (its first line and its size
  are read, nothing more: bad rows further down are the preprocess step's to find).
"""
from __future__ import annotations

from nmtrec.components.common.config import Config, ConfigError
from nmtrec.components.preprocess.read import PreprocessError


class PreflightError(ConfigError):
    """A run that cannot succeed, found before its first step; the message names the step it would fail in."""


def check_before_run(cfg: Config) -> None:
    from nmtrec.components.preprocess.schemas import get_format

    fmt = get_format(cfg.data.source)
    for i, task in enumerate(cfg.tasks):
        label = cfg.label_of(task)
        # the key that names the column: the task's own `label` setting, else the task itself
        key, what = (f"tasks.{i}.label", f"label {label!r} (of task {task!r})") if label != task else ("tasks", repr(task))
        if cfg.data.labels is not None:
            if label not in cfg.data.labels:
                raise PreflightError(f"{key}: {what} is not in data.labels {cfg.data.labels}: a task trains on its "
                                     f"label column; add it to data.labels")
        elif label not in fmt.default_labels:
            raise PreflightError(f"{key}: {what} is not a label of the {fmt.name} data (labels: "
                                 f"{', '.join(fmt.default_labels)}); if your file has a 0/1 column {label!r}, list "
                                 f"the labels to read in data.labels")
    if cfg.data.source == "synthetic":
        return
    from nmtrec.components.preprocess.read import byte_ranges, check_columns, inspect_file  # no Beam here

    f = cfg.features
    try:
        layout = inspect_file(cfg.data.path, fmt)
        check_columns(layout, f.sparse, [c for cols in f.bags.values() for c in cols],
                      cfg.data.labels if cfg.data.labels is not None else fmt.default_labels,
                      cfg.data.labels is not None)
        byte_ranges(layout, cfg.data.chunk_bytes)
    except PreprocessError as e:
        raise PreflightError(f"step 'preprocess' (checked before the run; data.path): {e}") from None
