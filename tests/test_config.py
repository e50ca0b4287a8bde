"""Bad configs fail with the file and key named."""
import pytest

from nmtrec.components.preprocess.from_config import label_columns
from nmtrec.components.common.config import ConfigError, load_config


def test_demo_config_loads():
    cfg = load_config("configs/demo.yaml")
    assert cfg.tasks == ["like", "click"]


@pytest.mark.parametrize("text,needle", [
    ("tasks: [like, like]\n", "tasks"),
    ("tasks: [like]\ntrain: {batch_size: 0}\n", "train.batch_size"),
    ("tasks: [like]\ndata: {split: [0.5, 0.1, 0.1]}\n", "data.split"),
    ("tasks: [like]\nmodel: {arch: nope}\n", "model.arch"),
    ("tasks: [like]\ntrian: {}\n", "trian"),
    ("tasks: [like]\ndata: {source: tenrec}\n", "data.path"),
    ("- just a list\n", "mapping"),
    ("tasks: [like]\ndata: {on_bad_rows: ignore}\n", "data.on_bad_rows"),
    ("tasks: [like]\ndata: {negative_ratio: 0}\n", "data.negative_ratio"),
    ("tasks: [like]\ndata: {negative_ratio: 2, labels: [like], sample_label: click}\n", "sample_label"),
    ("tasks: [like]\ndata: {synthetic: {conflict: 2}}\n", "data.synthetic.conflict"),
])
def test_bad_config_names_key(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert str(f) in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("name,labels", [("tenrec", ["click", "follow", "like", "share"]), ("tiktok", ["finish", "like"])])
def test_dataset_configs_load(name, labels):
    cfg = load_config(f"configs/{name}.yaml")
    assert cfg.data.source == name and label_columns(cfg.data) == labels


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
