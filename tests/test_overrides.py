"""`--set key.path=value`: the value read as YAML, applied to the file's keys before validation, so an
override equals the same edit made in the file; a bad one exits 2 with one line naming the key."""
import pytest
import yaml

from conftest import ROOT
from nmtrec.components.common.config import ConfigError, load_config
from nmtrec.components.common.overrides import apply_overrides, parse_override
from nmtrec.pipelines.cli import main

DEMO = ROOT / "configs" / "demo.yaml"


@pytest.mark.parametrize("text,value", [
    ("seed=3", 3), ("train.lr=0.01", 0.01), ("nmt.fail_on_breach=true", True), ("name=x=y", "x=y"),
    ("tasks=[like, click]", ["like", "click"]), ("data.labels=", None), ("model.tower_dims=[]", []),
    ("tasks.1={name: buy, label: click}", {"name": "buy", "label": "click"}),
])
def test_the_value_is_read_as_yaml(text, value):
    o = parse_override(text)
    assert o.value == value and type(o.value) is type(value)


def test_paths_reach_sections_list_items_and_bare_task_names():
    raw = {"tasks": ["like", "click"], "train": {"lr": 0.1}}
    got = apply_overrides(raw, [parse_override(o) for o in (
        "train.lr=0.2", "model.arch=ple", "tasks.1.loss=pairwise", "tasks.0.label=follow", "train.lr=0.3")])
    assert got == {"tasks": [{"name": "like", "label": "follow"}, {"name": "click", "loss": "pairwise"}],
                   "train": {"lr": 0.3}, "model": {"arch": "ple"}}  # the last of two overrides wins
    assert raw == {"tasks": ["like", "click"], "train": {"lr": 0.1}}  # the caller's dict is left alone


def _edited(tmp_path, edit) -> str:
    """The demo config with `edit` made in the file itself: what an override must equal."""
    raw = yaml.safe_load(DEMO.read_text())
    edit(raw)
    f = tmp_path / "edited.yaml"
    f.write_text(yaml.safe_dump(raw))
    return str(f)


def test_an_override_equals_the_same_edit_in_the_file(tmp_path):
    def edit(raw):
        raw["model"]["arch"] = "ple"
        raw["train"]["lr"] = 0.01
        raw["data"]["synthetic"]["rows"] = 1000
        raw["tasks"][1] = {"name": "click", "loss": "pairwise"}
        raw.setdefault("nmt", {})["constraint_data"] = "valid"
        raw["tasks"][0] = {"name": "like", "tolerance": 0.002}
    sets = ["model.arch=ple", "train.lr=0.01", "data.synthetic.rows=1000", "tasks.1.loss=pairwise",
            "nmt.constraint_data=valid", "tasks.0.tolerance=0.002"]
    got = load_config(DEMO, sets)
    assert got == load_config(_edited(tmp_path, edit))
    assert got != load_config(DEMO)
    assert (got.loss_of("click"), got.loss_of("like"), got.tolerance_of("like")) == ("pairwise", "bce", 0.002)


def _stage_inputs(compiled: str) -> dict:
    """Stage 2's config parameter in a compiled pipeline package."""
    spec = next(yaml.safe_load_all(open(compiled)))
    return yaml.safe_load(spec["root"]["dag"]["tasks"]["train-stage-2"]["inputs"]["parameters"]["config_json"]
                          ["runtimeValue"]["constant"])


def test_compile_with_set_writes_the_overridden_pipeline(tmp_path, capsys):
    plain, overridden = tmp_path / "plain.yaml", tmp_path / "set.yaml"
    assert main(["compile", "--config", str(DEMO), "--output", str(plain)]) == 0
    assert main(["compile", "--config", str(DEMO), "--output", str(overridden),
                 "--set", "model.arch=ple", "--set", "train.lr=0.01"]) == 0
    before, after = _stage_inputs(plain), _stage_inputs(overridden)
    assert (before["model"]["arch"], before["train"]["lr"]) == ("mmoe", 0.005)
    assert (after["model"]["arch"], after["train"]["lr"]) == ("ple", 0.01)
    # byte for byte the package of a file with those two values written in
    def edit(raw):
        raw["model"]["arch"] = "ple"
        raw["train"]["lr"] = 0.01
    reference = tmp_path / "ref.yaml"
    assert main(["compile", "--config", _edited(tmp_path, edit), "--output", str(reference)]) == 0
    assert overridden.read_text() == reference.read_text()


BAD = [
    ("train.lrr=1", "train.lrr: Extra inputs are not permitted (from --set train.lrr=1)"),
    ("train.lr=abc", "train.lr: Input should be a valid number"),
    ("model.arch=nope", "model.arch: Input should be 'shared_bottom', 'omoe', 'mmoe' or 'ple' (from --set model.arch=nope)"),
    ("tasks.1.loss=hinge", "tasks.1.loss: Input should be 'bce' or 'pairwise' (from --set tasks.1.loss=hinge)"),
    ("tasks.1.tolerance=-0.1", "tasks.1.tolerance: Input should be greater than or equal to 0 (from --set tasks.1.tolerance=-0.1)"),
    ("tasks.7.loss=bce", "--set tasks.7.loss=bce: tasks has 2 item(s) (0..1), no item 7"),
    ("train.lr.x=1", "--set train.lr.x=1: train.lr is 0.005, not a section with keys"),
    ("nmt.tau", "--set 'nmt.tau': expected KEY.PATH=VALUE"),
    ("nmt.tau=[1", "--set 'nmt.tau=[1': the value is not valid YAML"),
]


@pytest.mark.parametrize("command", ["run", "compile", "submit", "preprocess", "generate"])
@pytest.mark.parametrize("override,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_override_exits_2_with_one_line_naming_the_key(tmp_path, capsys, command, override, message):
    args = {"run": ["--output", str(tmp_path / "o")], "compile": ["--output", str(tmp_path / "p.yaml")],
            "submit": ["--host", "http://127.0.0.1:9"], "preprocess": ["--output", str(tmp_path / "d")],
            "generate": ["--output", str(tmp_path / "g.csv")]}[command]
    assert main([command, "--config", str(DEMO), *args, "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nmtrec: error: {DEMO}") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_several_problems_are_listed_one_per_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["train.lr=-1", "train.batch_size=0"])
    lines = str(e.value).splitlines()
    assert lines[0] == f"{DEMO} with --set train.lr=-1 --set train.batch_size=0: invalid config"
    assert sorted(lines[1:]) == ["  train.batch_size: Input should be greater than 0 (from --set train.batch_size=0)",
                                 "  train.lr: Input should be greater than 0 (from --set train.lr=-1)"]


def test_the_effective_config_reads_back_equal(tmp_path):
    """What `nmtrec run` saves as <output>/config.yaml (pipelines/local.py) loads to the run's config."""
    from nmtrec.pipelines.local import EFFECTIVE_CONFIG, save_effective_config

    cfg = load_config(DEMO, ["tasks=[like, {name: clicked, label: click, loss: pairwise}]", "train.lr=0.02"])
    path = save_effective_config(cfg, tmp_path)
    assert path == tmp_path / EFFECTIVE_CONFIG and load_config(path) == cfg
    written = yaml.safe_load(path.read_text())
    assert written["tasks"] == ["like", {"name": "clicked", "label": "click", "loss": "pairwise"}]
    assert "task_settings" not in written and written["train"]["lr"] == 0.02
    assert "task_settings" not in load_config(DEMO).model_dump()  # no per-task settings: dumps as before
