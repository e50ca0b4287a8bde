"""One pipeline factory for every target: kfp.local runs, compiled YAML and cluster submission.

preprocess -> train stage 1 (tasks[0]) -> ... -> train stage m -> evaluate. Each stage receives the
previous stage's checkpoint artifact. Each step gets only the part of the config it depends on, so
KFP's cache keys change only when that step's inputs really change.
"""

import re
from dataclasses import dataclass
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, pipeline_context

from nmtrec.components.evaluate.component import evaluate, evaluate_all
from nmtrec.components.generate.component import generate_synthetic
from nmtrec.components.preprocess.component import preprocess_dataset, preprocess_file
from nmtrec.components.train.component import train_stage
from nmtrec.components.train.joint_component import train_joint
from nmtrec.components.train.trainjob_component import train_stage_trainjob
from nmtrec.pipelines import reuse
from nmtrec.components.common.config import Config
from nmtrec.components.common.step_inputs import RUN_SETTINGS_ENV, Step, run_settings_json, step_inputs_json
from nmtrec.pipelines.baselines import add_methods
from nmtrec.pipelines.resources import apply_cluster

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
    train_stage_trainjob: object = None


def make_ops(image: str = DEFAULT_IMAGE, train_image: str | None = None) -> Ops:
    """Wrap the component functions; the project image already holds kfp and the project. Train steps
    may run in another (GPU) image."""
    def op(fn, base=image):
        return dsl.component(fn, base_image=base, install_kfp_package=False)
    train = train_image or image
    return Ops(op(generate_synthetic), op(preprocess_dataset), op(preprocess_file), op(train_stage, train),
               op(evaluate), op(train_joint, train), op(evaluate_all), op(train_stage_trainjob))


def _set_env(name: str, value: str) -> None:
    """On every task: KFP's cache key on a cluster does not cover a task's environment."""
    for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
        if task.container_spec is not None:
            task.set_env_variable(name, value)


def pipeline_name(cfg: Config) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", cfg.name.lower()).strip("-") or "nmtrec"


def build_pipeline(cfg: Config, image: str | None = None, *, local: bool = False,
                   start: "reuse.StartPoint | None" = None):
    """The pipeline function. `local`: a kfp.local run (steps' cache keys also cover the project's
    source code); `start`: begin after an earlier run's stage checkpoint (`--from-checkpoint`).
    The function's `stage_tasks` maps task names to stage display names once it is built."""
    cc = cfg.cluster
    image = image or (cc.image if cc else DEFAULT_IMAGE)
    ops = make_ops(image, cc.gpu_image if cc and cc.gpus else None)
    multi_node = cc is not None and cc.nodes > 1
    stage_tasks: dict[str, str] = {}

    @dsl.pipeline(name=pipeline_name(cfg), description=f"NMT staged training of {' > '.join(cfg.tasks)}",
                  pipeline_root=cc.pipeline_root if cc and not local else None)
    def nmt_pipeline() -> NamedTuple("Outputs", [("report", Artifact), ("html", HTML)]):
        prep_json = step_inputs_json(cfg, Step("preprocess"))
        if cfg.data.source == "synthetic":
            raw = ops.generate(config_json=step_inputs_json(cfg, Step("generate")))
            raw.set_display_name("generate-synthetic")
            prep = ops.preprocess_dataset(config_json=prep_json, raw=raw.outputs["raw"])
        else:
            prep = ops.preprocess_file(config_json=prep_json, source_path=cfg.data.path)
        prep.set_display_name("preprocess")
        dataset = prep.outputs["dataset"]
        previous = first_stage = None
        first = 0
        if start is not None:  # --from-checkpoint: stages 1..k come from an earlier run
            last, first_import = reuse.import_checkpoint(start)
            previous, first_stage = last.outputs["artifact"], first_import.outputs["artifact"]
            first = start.stages_done
        for k in range(first, len(cfg.tasks)):
            inputs = {"previous": previous} if previous is not None else {}
            op = ops.train_stage_trainjob if multi_node else ops.train_stage
            step = op(config_json=step_inputs_json(cfg, Step("stage", k)), stage=k, dataset=dataset, **inputs)
            step.set_display_name(f"stage-{k + 1}-{cfg.tasks[k]}")
            stage_tasks[step.name] = f"stage-{k + 1}-{cfg.tasks[k]}"
            if cfg.train.retries:  # a retried step resumes from its last checkpoint (cluster.retries overrides)
                step.set_retry(num_retries=cfg.train.retries, backoff_duration="30s")
            previous = step.outputs["checkpoint"]
            first_stage = first_stage or previous
        famo_nmt, joint = add_methods(cfg, ops.train_stage, ops.train_joint, dataset, first_stage)
        ev_inputs = {"famo_nmt": famo_nmt} if famo_nmt is not None else {}
        ev_op = ops.evaluate if joint is None else ops.evaluate_all
        if joint is not None:
            ev_inputs["joint"] = joint
        ev = ev_op(config_json=step_inputs_json(cfg, Step("evaluate")), dataset=dataset,
                   checkpoint=previous, first_stage=first_stage, **ev_inputs).set_display_name("evaluate")
        if local:  # run_local hands the run settings to its subprocesses (outside the cache key)
            reuse.key_by_code(ops)
        else:
            _set_env(RUN_SETTINGS_ENV, run_settings_json(cfg))
        apply_cluster(cc)
        outputs = NamedTuple("Outputs", [("report", Artifact), ("html", HTML)])
        return outputs(report=ev.outputs["report"], html=ev.outputs["html"])

    nmt_pipeline.stage_tasks = stage_tasks
    return nmt_pipeline
