"""One pipeline factory for every target: kfp.local runs, compiled YAML and cluster submission.

preprocess -> train stage 1 (tasks[0]) -> ... -> train stage m -> evaluate. Each stage receives the
previous stage's checkpoint artifact. Each step gets only the part of the config it depends on, so
KFP's cache keys change only when that step's inputs really change.
"""

import re
from dataclasses import dataclass
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact

from components.evaluate.component import evaluate, evaluate_all
from components.generate.component import generate_synthetic
from components.preprocess.component import preprocess_dataset, preprocess_file
from components.train.component import train_stage
from components.train.joint_component import train_joint
from pipelines.config import Config
from pipelines.methods import add_methods

DEFAULT_IMAGE = "ghcr.io/nmtrec/nmtrec-cpu:0.1.0"


@dataclass(frozen=True)
class Ops:
    generate: object
    preprocess_dataset: object
    preprocess_file: object
    train_stage: object
    evaluate: object
    train_joint: object
    evaluate_all: object


def make_ops(image: str = DEFAULT_IMAGE) -> Ops:
    """Wrap the component functions; the project image already holds kfp and the project."""
    def op(fn):
        return dsl.component(fn, base_image=image, install_kfp_package=False)
    return Ops(op(generate_synthetic), op(preprocess_dataset), op(preprocess_file), op(train_stage), op(evaluate),
               op(train_joint), op(evaluate_all))


def data_config_json(cfg: Config) -> str:
    """What preprocessing depends on (not tasks, model or training)."""
    return cfg.model_copy(update={"name": "", "tasks": ["-"], "methods": ["nmt"], "model": type(cfg.model)(),
                                  "train": type(cfg.train)(), "nmt": type(cfg.nmt)()}).to_json()


def stage_config_json(cfg: Config, stage: int) -> str:
    """What stage k depends on: tasks[:k+1] and everything but the run name and the compared methods."""
    return cfg.model_copy(update={"name": "", "tasks": cfg.tasks[:stage + 1], "methods": ["nmt"]}).to_json()


def pipeline_name(cfg: Config) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", cfg.name.lower()).strip("-") or "nmtrec"


def build_pipeline(cfg: Config, image: str = DEFAULT_IMAGE):
    ops = make_ops(image)

    @dsl.pipeline(name=pipeline_name(cfg), description=f"NMT staged training of {' > '.join(cfg.tasks)}")
    def nmt_pipeline() -> NamedTuple("Outputs", [("report", Artifact), ("html", HTML)]):
        data_json = data_config_json(cfg)
        if cfg.data.source == "synthetic":
            raw = ops.generate(config_json=data_json).set_display_name("generate-synthetic")
            prep = ops.preprocess_dataset(config_json=data_json, raw=raw.outputs["raw"])
        else:
            prep = ops.preprocess_file(config_json=data_json, source_path=cfg.data.path)
        prep.set_display_name("preprocess")
        dataset = prep.outputs["dataset"]
        previous = first_stage = None
        for k, task in enumerate(cfg.tasks):
            inputs = {"previous": previous} if previous is not None else {}
            step = ops.train_stage(config_json=stage_config_json(cfg, k), stage=k, dataset=dataset, **inputs)
            step.set_display_name(f"stage-{k + 1}-{task}")
            if cfg.train.retries:
                step.set_retry(num_retries=cfg.train.retries, backoff_duration="30s")
            previous = step.outputs["checkpoint"]
            first_stage = first_stage or previous
        famo_nmt, joint = add_methods(cfg, ops.train_stage, ops.train_joint, dataset, first_stage, stage_config_json)
        ev_inputs = {"famo_nmt": famo_nmt} if famo_nmt is not None else {}
        ev_op = ops.evaluate if joint is None else ops.evaluate_all
        if joint is not None:
            ev_inputs["joint"] = joint
        ev = ev_op(config_json=cfg.model_copy(update={"name": ""}).to_json(), dataset=dataset, checkpoint=previous,
                   first_stage=first_stage, **ev_inputs).set_display_name("evaluate")
        outputs = NamedTuple("Outputs", [("report", Artifact), ("html", HTML)])
        return outputs(report=ev.outputs["report"], html=ev.outputs["html"])

    return nmt_pipeline
