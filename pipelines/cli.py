"""`nmtrec` command line: run locally, compile for Kubeflow, submit to a Kubeflow Pipelines host."""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import sys
import traceback
from pathlib import Path

from nmtrec.components.preprocess.read import PreprocessError
from nmtrec.components.common.config import ConfigError, load_config
from nmtrec.pipelines.submit import SubmitError
from nmtrec.components.train.trainjob import TrainJobError


def _start(cfg, args):
    """--from-checkpoint URI [--from-stage K] -> a reuse.StartPoint, or None."""
    if not getattr(args, "from_checkpoint", None):
        if getattr(args, "from_stage", None) is not None or getattr(args, "first_stage", None):
            raise ConfigError("--from-stage and --first-stage need --from-checkpoint")
        return None
    from nmtrec.pipelines.reuse import resolve_start

    return resolve_start(cfg, args.from_checkpoint, args.from_stage, args.first_stage)


def _run(args) -> int:
    from nmtrec.components.evaluate.scoring import summary_table
    from nmtrec.pipelines.local import EFFECTIVE_CONFIG, forget_report, run_local
    from nmtrec.pipelines.preflight import check_before_run

    forget_report(args.output)
    cfg = load_config(args.config, args.set)
    start = _start(cfg, args)
    check_before_run(cfg)
    print(f"nmtrec run '{cfg.name}': {' > '.join(cfg.tasks)}; {len(cfg.methods)} method(s); output {args.output}"
          + ("" if args.verbose else " (steps' output in logs/, --verbose to stream it)"), flush=True)
    run = run_local(cfg, args.output, cache=not args.no_cache, start=start, verbose=args.verbose)
    report = json.loads(run.report.read_text())
    print(f"\nNMT run '{cfg.name}': tasks in priority order {' > '.join(cfg.tasks)} ({run.seconds:.0f}s)")
    print(f"stages trained: {', '.join(run.trained_stages) or 'none'}; "
          f"reused from cache: {', '.join(run.reused_stages) or 'none'}\n")
    print(summary_table(report))
    print(f"\nreport: {run.report}\nHTML report: {run.report.with_name('report.html')}\n"
          f"effective config: {run.report.with_name(EFFECTIVE_CONFIG)}")
    logs = [r.log for r in run.records if r.ran]
    if logs:
        print(f"step logs ({run.logs}/): {', '.join(p.name for p in logs)}")
    return 0


def _step_failed(e, verbose: bool) -> int:
    """One message: the step's own error, the step and its log; exit 2 like the other commands' errors
    (1 when the step died without raising one: killed, out of memory)."""
    if verbose and e.__cause__ is not None:
        traceback.print_exception(e.__cause__, file=sys.stderr)
    where = f"\n  step log: {e.log}" if e.log else ""
    print(f"nmtrec: error: step {e.step!r} failed: {e}{where}", file=sys.stderr)
    return 2 if e.recorded else 1


def _compile(args) -> int:
    from nmtrec.pipelines.submit import compile_package

    cfg = load_config(args.config, args.set)
    out = compile_package(cfg, args.output, args.image, _start(cfg, args))
    print(f"compiled pipeline '{cfg.name}' ({len(cfg.tasks)} stages) -> {out}")
    return 0


def _submit(args) -> int:
    from nmtrec.pipelines.submit import submit

    cfg = load_config(args.config, args.set)
    result = submit(cfg, args.host, experiment=args.experiment, namespace=args.namespace, cache=not args.no_cache,
                    image=args.image, start=_start(cfg, args))
    print(f"submitted pipeline '{cfg.name}' to {args.host}: run {getattr(result, 'run_id', result)}")
    return 0


def _add_start_args(p) -> None:
    p.add_argument("--from-checkpoint", metavar="URI",
                   help="start after an earlier run's stage-k checkpoint artifact (reuses stages 1..k)")
    p.add_argument("--from-stage", type=int, metavar="K", help="k, for a remote --from-checkpoint URI")
    p.add_argument("--first-stage", metavar="URI",
                   help="stage 1's checkpoint of the same run, when --from-checkpoint is a later stage (the "
                        "report's single-task baseline)")


def _add_set_arg(p) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config key, the value read as YAML (repeatable), e.g. --set train.lr=0.01 "
                        "--set tasks.1.loss=pairwise; validated like the file")


def _preprocess(args) -> int:
    from nmtrec.components.preprocess.beam_pipeline import run_preprocess
    from nmtrec.components.preprocess.from_config import spec_from_config

    cfg = load_config(args.config, args.set)
    source = args.input or cfg.data.path
    if not source:
        raise ConfigError(f"{args.config}: data.path is not set; give the input file with --input")
    if args.runner:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"runner": args.runner})})
    spec = run_preprocess(source, args.output, spec_from_config(cfg))
    print(json.dumps(spec.rows_per_split()))
    return 0


def _generate(args) -> int:
    from nmtrec.components.generate.synthetic import SyntheticSpec, generate

    cfg = load_config(args.config, args.set)
    rows = generate(SyntheticSpec(seed=cfg.seed, **cfg.data.synthetic.model_dump()), args.output)
    print(f"{rows} rows -> {args.output}")
    return 0


def _runs(args) -> int:
    from nmtrec.pipelines.inspect_run import find_runs, make_console, render_runs

    folders = find_runs(args.dir)
    if not folders:
        print(f"no run folders under {args.dir} (a run folder holds report.json, run.json or kfp/)")
        return 0
    render_runs(folders, make_console())
    return 0


def _inspect(args) -> int:
    from nmtrec.pipelines.inspect_run import read_run, make_console, render_run

    render_run(read_run(args.run), make_console())
    return 0


def _export(args) -> int:
    from nmtrec.components.serve.export import export_checkpoint

    m = export_checkpoint(args.checkpoint, args.output, dataset_dir=args.dataset, int8=args.int8)
    print(f"exported {m['method']} model ({' > '.join(m['tasks'])}; embeddings {m['embeddings']}) -> {args.output}")
    return 0


def _predict(args) -> int:
    from nmtrec.components.serve.predict import predict_file

    r = predict_file(args.model, args.input, args.output, on_bad_rows=args.on_bad_rows, batch_rows=args.batch_rows)
    skipped = f"; {r.bad_rows_skipped} bad row(s) skipped" if r.bad_rows_skipped else ""
    print(f"{r.rows} rows scored ({', '.join(r.tasks)}){skipped} -> {r.output}")
    return 0


def _benchmarks_home() -> Path:
    """The checkout that holds benchmarks/ (not installed: the working directory or, for an editable
    install, the source tree)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (base / "benchmarks" / "__init__.py").is_file():
            return base
    raise ConfigError("benchmarks are not installed with nmtrec: run `nmtrec bench` from a checkout of the repository")


def _benchmark_names() -> dict[str, str]:
    """`nmtrec bench NAME` -> the first line of benchmarks/<name>.py's docstring (read, not imported)."""
    try:
        home = _benchmarks_home()
    except ConfigError:
        return {}
    out = {}
    for f in sorted((home / "benchmarks").glob("[!_]*.py")):
        tree = ast.parse(f.read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        if {"add_arguments", "run"} <= defined:  # a benchmark; other files there are its helpers
            doc = (ast.get_docstring(tree) or "").strip()
            out[f.stem.replace("_", "-")] = doc.splitlines()[0] if doc else ""
    return out


def _bench(args) -> int:
    """Import only the benchmark asked for; it parses its own arguments (add_arguments, run). The
    checkout is on sys.path only while it runs (its worker processes inherit it): left there, its
    folders (docker/ ...) would shadow installed packages of the same name in this process."""
    home = str(_benchmarks_home())
    added = home not in sys.path
    if added:
        sys.path.insert(0, home)
    try:
        names = _benchmark_names()
        if args.name not in names:
            raise ConfigError(f"unknown benchmark {args.name!r}; expected one of {', '.join(names)}")
        mod = importlib.import_module("benchmarks." + args.name.replace("-", "_"))
        parser = argparse.ArgumentParser(prog=f"nmtrec bench {args.name}", description=mod.__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(parser)
        return mod.run(parser.parse_args(args.args))
    finally:
        if added:
            sys.path.remove(home)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nmtrec", description="Prioritized multi-task recommendation training (NMT)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the whole pipeline locally with kfp.local")
    r.add_argument("--config", required=True)
    _add_set_arg(r)
    r.add_argument("--output", required=True, help="directory for report.json and the run's artifacts")
    r.add_argument("--no-cache", action="store_true",
                   help="rerun every step (default: reuse steps cached in .kfp-cache beside --output)")
    r.add_argument("--verbose", "-v", action="store_true",
                   help="stream every step's full output (kfp.local's executor input, progress bars, warnings) "
                        "to the console too; by default it goes to <output>/logs/<step>.log")
    _add_start_args(r)
    r.set_defaults(func=_run)
    c = sub.add_parser("compile", help="compile the pipeline to a Kubeflow Pipelines YAML package")
    c.add_argument("--config", required=True)
    _add_set_arg(c)
    c.add_argument("--output", required=True, help="pipeline YAML file to write")
    c.add_argument("--image", help="container image of the steps (default: cluster.image)")
    _add_start_args(c)
    c.set_defaults(func=_compile)
    s = sub.add_parser("submit", help="compile and start a run on a Kubeflow Pipelines host")
    s.add_argument("--config", required=True)
    _add_set_arg(s)
    s.add_argument("--host", required=True, help="KFP API URL, e.g. https://kubeflow.example.com/pipeline")
    s.add_argument("--experiment", help="experiment name (default: the config's name)")
    s.add_argument("--namespace", help="Kubernetes namespace (multi-user Kubeflow)")
    s.add_argument("--no-cache", action="store_true", help="disable KFP caching for this run")
    s.add_argument("--image", help="container image of the steps (default: cluster.image)")
    _add_start_args(s)
    s.set_defaults(func=_submit)
    pp = sub.add_parser("preprocess", help="Beam preprocessing of a data file into Parquet splits + feature spec")
    pp.add_argument("--config", required=True)
    _add_set_arg(pp)
    pp.add_argument("--input", help="data file (default: the config's data.path)")
    pp.add_argument("--output", required=True, help="dataset directory to write")
    pp.add_argument("--runner", help="Beam runner (default: data.runner), e.g. FlinkRunner")
    pp.set_defaults(func=_preprocess)
    g = sub.add_parser("generate", help="write the config's synthetic CSV (data.synthetic)")
    g.add_argument("--config", required=True)
    _add_set_arg(g)
    g.add_argument("--output", required=True, help="CSV file to write")
    g.set_defaults(func=_generate)
    ls = sub.add_parser("runs", help="list the runs (nmtrec run --output folders) under a folder")
    ls.add_argument("dir", metavar="DIR", help="folder to search, e.g. runs")
    ls.set_defaults(func=_runs)
    ins = sub.add_parser("inspect", help="a run's stages (trained/reused, checkpoint paths, frozen optima, λ, "
                                         "audits) and its methods' AUC")
    ins.add_argument("run", metavar="RUN", help="the run's output folder, e.g. runs/demo")
    ins.set_defaults(func=_inspect)
    ex = sub.add_parser("export", help="a stage checkpoint -> a servable model directory (torch.export, raw ids in)")
    ex.add_argument("--checkpoint", required=True, metavar="STAGE_DIR", help="a stage's checkpoint artifact")
    ex.add_argument("--output", required=True, metavar="DIR", help="directory to write (model.pt2 + export.json)")
    ex.add_argument("--dataset", metavar="DIR", help="the preprocessed dataset it was trained on, for the vocabularies "
                                                     "(default: the preprocess step of the same `nmtrec run`)")
    ex.add_argument("--int8", action="store_true", help="row-wise int8 embedding tables (dequantized on lookup)")
    ex.set_defaults(func=_export)
    pr = sub.add_parser("predict", help="score a raw data file (the training format) with an exported model -> Parquet")
    pr.add_argument("--model", required=True, metavar="DIR", help="an `nmtrec export` directory")
    pr.add_argument("--input", required=True, help="raw data file in the model's training format")
    pr.add_argument("--output", required=True, help="Parquet file to write: row, line and one column per task")
    pr.add_argument("--on-bad-rows", choices=["error", "skip"], default="error",
                    help="a row that does not parse: stop naming its line (default), or skip and count it")
    pr.add_argument("--batch-rows", type=int, default=65536, help="rows per forward pass (default 65536)")
    pr.set_defaults(func=_predict)
    names = _benchmark_names()
    b = sub.add_parser("bench", help="benchmarks (ratios against a reference measured in the same run; from a checkout)",
                       description="\n".join(f"  {n:12s} {d}" for n, d in names.items()) or "no benchmarks/ here",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("name", help="benchmark to run: " + ", ".join(names))
    b.add_argument("args", nargs=argparse.REMAINDER, help="its own options (nmtrec bench NAME --help)")
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    from nmtrec.pipelines.console import StepFailed

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StepFailed as e:
        return _step_failed(e, getattr(args, "verbose", False))
    except (ConfigError, PreprocessError) as e:  # the message names the file and line or key
        print(f"nmtrec: error: {e}", file=sys.stderr)
        return 2
    except (SubmitError, TrainJobError) as e:  # they name the host or job and what failed
        print(f"nmtrec: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
