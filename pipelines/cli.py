"""`nmtrec` command line: run locally, compile for Kubeflow."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from components.preprocess.read import PreprocessError
from pipelines.config import ConfigError, load_config


def _run(args) -> int:
    from components.evaluate.core import summary_table
    from pipelines.local import run_local

    cfg = load_config(args.config)
    start = time.time()
    report_path = run_local(cfg, args.output)
    report = json.loads(report_path.read_text())
    print(f"\nNMT run '{cfg.name}': tasks in priority order {' > '.join(cfg.tasks)} "
          f"({time.time() - start:.0f}s)\n")
    print(summary_table(report))
    print(f"\nreport: {report_path}\nHTML report: {report_path.with_name('report.html')}")
    return 0


def _compile(args) -> int:
    from kfp import compiler

    from pipelines.factory import DEFAULT_IMAGE, build_pipeline

    cfg = load_config(args.config)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.yaml")
    compiler.Compiler().compile(build_pipeline(cfg, args.image or DEFAULT_IMAGE), str(tmp))
    tmp.replace(out)
    print(f"compiled pipeline '{cfg.name}' ({len(cfg.tasks)} stages) -> {out}")
    return 0


def _preprocess(args) -> int:
    from components.preprocess.core import run_preprocess
    from components.preprocess.run import spec_from_config

    cfg = load_config(args.config)
    source = args.input or cfg.data.path
    if not source:
        raise ConfigError(f"{args.config}: data.path is not set; give the input file with --input")
    if args.runner:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"runner": args.runner})})
    spec = run_preprocess(source, args.output, spec_from_config(cfg))
    print(json.dumps({s: v["rows"] for s, v in spec["splits"].items()}))
    return 0


def _generate(args) -> int:
    from components.generate.core import SyntheticSpec, generate

    cfg = load_config(args.config)
    rows = generate(SyntheticSpec(seed=cfg.seed, **cfg.data.synthetic.model_dump()), args.output)
    print(f"{rows} rows -> {args.output}")
    return 0


# `nmtrec bench NAME`: module path of each benchmark; a module has add_arguments(parser) and run(args) -> int
BENCHMARKS: dict[str, str] = {"preprocess": "components.preprocess.bench", "conflict": "components.generate.conflict",
                              "train": "components.train.bench", "nmt": "components.train.bench_nmt"}


def _bench(args) -> int:
    import importlib

    return importlib.import_module(BENCHMARKS[args.bench]).run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nmtrec", description="Prioritized multi-task recommendation training (NMT)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the whole pipeline locally with kfp.local")
    r.add_argument("--config", required=True)
    r.add_argument("--output", required=True, help="directory for report.json and the run's artifacts")
    r.set_defaults(func=_run)
    c = sub.add_parser("compile", help="compile the pipeline to a Kubeflow Pipelines YAML package")
    c.add_argument("--config", required=True)
    c.add_argument("--output", required=True, help="pipeline YAML file to write")
    c.add_argument("--image", help="container image of the steps")
    c.set_defaults(func=_compile)
    pp = sub.add_parser("preprocess", help="Beam preprocessing of a data file into Parquet splits + feature spec")
    pp.add_argument("--config", required=True)
    pp.add_argument("--input", help="data file (default: the config's data.path)")
    pp.add_argument("--output", required=True, help="dataset directory to write")
    pp.add_argument("--runner", help="Beam runner (default: data.runner), e.g. FlinkRunner")
    pp.set_defaults(func=_preprocess)
    g = sub.add_parser("generate", help="write the config's synthetic CSV (data.synthetic)")
    g.add_argument("--config", required=True)
    g.add_argument("--output", required=True, help="CSV file to write")
    g.set_defaults(func=_generate)
    if BENCHMARKS:
        import importlib

        b = sub.add_parser("bench", help="benchmarks (ratios against a reference measured in the same run)")
        bsub = b.add_subparsers(dest="bench", required=True)
        for name, module in BENCHMARKS.items():
            mod = importlib.import_module(module)
            mod.add_arguments(bsub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0]))
        b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, PreprocessError) as e:  # the message names the file and line or key
        print(f"nmtrec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
