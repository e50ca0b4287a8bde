"""File formats the preprocessing reads: how to find the column names and how each column is typed.

- tenrec: the Tenrec video family (`ctr_data_1M.csv` with hist_1..hist_10, `QK-video.csv`,
  `QB-video.csv`, `sbr_data_1M.csv`): comma-separated with a header; every column an integer id or
  0/1 label, `\\N` for SQL nulls (video_category), hist padding 0.
- synthetic: our generator's output, the `ctr_data_1M` schema plus optional `true_<label>`
  probability columns (floats), carried through as non-feature columns.
- tiktok: ICME-2019 short-video track 1: tab-separated, no header, 12 integer columns; `-1` ids
  (music_id) are a real value ("no music"), kept as their own vocabulary entry.
"""
from __future__ import annotations

from dataclasses import dataclass

TENREC_BASE = ["user_id", "item_id", "click", "follow", "like", "share", "video_category",
               "watching_times", "gender", "age"]
TENREC_HIST = [f"hist_{i}" for i in range(1, 11)]
TIKTOK_COLUMNS = ["uid", "user_city", "item_id", "author_id", "item_city", "channel", "finish", "like",
                  "music_id", "device", "time", "duration_time"]
TRUTH_PREFIX = "true_"
NULLS = ["\\N", ""]


@dataclass(frozen=True)
class FileFormat:
    name: str
    delimiter: str
    header: bool  # column names come from line 1; otherwise `columns`
    columns: tuple[str, ...] = ()  # fixed names of a headerless format
    default_labels: tuple[str, ...] = ()
    describe: str = ""  # what a row should look like, for error messages

    def is_truth(self, column: str) -> bool:
        return column.startswith(TRUTH_PREFIX)


FORMATS = {
    "tenrec": FileFormat("tenrec", ",", True, default_labels=("click", "follow", "like", "share"),
                         describe="comma-separated Tenrec CSV with a header line "
                                  f"({','.join(TENREC_BASE)}[,hist_1..hist_10])"),
    "synthetic": FileFormat("synthetic", ",", True, default_labels=("click", "follow", "like", "share"),
                            describe="comma-separated synthetic CSV (Tenrec ctr_data schema + true_* columns)"),
    "tiktok": FileFormat("tiktok", "\t", False, tuple(TIKTOK_COLUMNS), default_labels=("finish", "like"),
                         describe=f"{len(TIKTOK_COLUMNS)} tab-separated integer fields, no header "
                                  f"({','.join(TIKTOK_COLUMNS)})"),
}


def get_format(name: str) -> FileFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown data format {name!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[name]
