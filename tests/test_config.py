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


def _load(tmp_path, text):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return load_config(f)


def test_a_task_may_name_its_label_loss_and_tolerance(tmp_path):
    cfg = _load(tmp_path, "tasks: [like, {name: buy, label: click, loss: pairwise, tolerance: 0.003}, share]\n"
                          "train: {loss: bce}\nnmt: {tolerance: 0.001, constraint_data: valid}\n")
    assert cfg.tasks == ["like", "buy", "share"]  # names everywhere in the code
    assert cfg.labels_of(cfg.tasks) == ["like", "click", "share"]
    assert [cfg.loss_of(t) for t in cfg.tasks] == ["bce", "pairwise", "bce"]  # unset: train.loss
    assert [cfg.tolerance_of(t) for t in cfg.tasks] == [0.001, 0.003, 0.001]  # unset: nmt.tolerance


def test_the_short_form_and_its_mapping_spelling_are_one_config(tmp_path):
    short = _load(tmp_path, "tasks: [like, click]\n")
    assert _load(tmp_path, "tasks: [{name: like}, {name: click, label: click}]\n") == short
    assert short.task_settings == {} and "task_settings" not in short.model_dump()


def test_per_task_settings_survive_json_and_the_written_form(tmp_path):
    from nmtrec.components.common.config import Config
    import yaml

    cfg = _load(tmp_path, "tasks: [like, {name: buy, label: click, loss: pairwise}]\n")
    assert Config.from_json(cfg.to_json()) == cfg
    assert cfg.as_written()["tasks"] == ["like", {"name": "buy", "label": "click", "loss": "pairwise"}]
    assert _load(tmp_path, yaml.safe_dump(cfg.as_written())) == cfg
    assert _load(tmp_path, yaml.safe_dump(cfg.model_dump(mode="json"))) == cfg  # a dumped config reads back too
    assert cfg.updated(tasks=["like", "buy", "share"]).label_of("buy") == "click"  # settings follow their task
    assert cfg.updated(tasks=["like"]).task_settings == {}


@pytest.mark.parametrize("text,message", [
    ("tasks: [like, {name: buy, loss: hinge}]\n", "tasks.1.loss: Input should be 'bce' or 'pairwise'"),
    ("tasks: [like, {name: buy, tolerance: -1}]\nnmt: {constraint_data: valid}\n",
     "tasks.1.tolerance: Input should be greater than or equal to 0"),
    ("tasks: [like, {label: click}]\n", "tasks.1: a task written as a mapping needs `name`"),
    ("tasks: [like, {name: buy, lable: click}]\n", "unknown key(s) ['lable']"),
    ("tasks: [like, {name: like, loss: pairwise}]\n", "tasks must be distinct"),
    ("tasks: [like]\ntask_settings: {buy: {loss: bce}}\n", "task_settings: ['buy'] are not in tasks ['like']"),
])
def test_bad_task_settings_name_the_task_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text)
    assert message in str(e.value) and str(tmp_path) in str(e.value)
