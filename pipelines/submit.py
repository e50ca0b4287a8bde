"""`nmtrec submit`: compile with the shared factory and start a run on a Kubeflow Pipelines host."""
from __future__ import annotations

import tempfile
from pathlib import Path

from nmtrec.components.common.config import Config, ConfigError
from nmtrec.components.common.files import atomic_file


class SubmitError(RuntimeError):
    """The KFP host refused or could not be reached; the message names the host."""


def compile_package(cfg: Config, path: str | Path, image: str | None = None, start=None) -> Path:
    from kfp import compiler

    from nmtrec.pipelines.pipeline import build_pipeline

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, suffix=".tmp.yaml") as tmp:  # the compiler picks the format by the extension
        compiler.Compiler().compile(build_pipeline(cfg, image, start=start), str(tmp))
    return path


def submit(cfg: Config, host: str, *, experiment: str | None = None, namespace: str | None = None,
           cache: bool = True, image: str | None = None, start=None, client_factory=None):
    """Returns the KFP RunPipelineResult (run_id). client_factory(host, namespace) builds the client."""
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"--host {host!r}: expected an http(s):// URL of the Kubeflow Pipelines API")
    if client_factory is None:
        import kfp

        def client_factory(host, namespace):
            return kfp.Client(host=host, **({"namespace": namespace} if namespace else {}))
    with tempfile.TemporaryDirectory(prefix="nmtrec-submit-") as tmp:
        package = compile_package(cfg, Path(tmp) / "pipeline.yaml", image, start)
        try:
            client = client_factory(host, namespace)
            return client.create_run_from_pipeline_package(
                str(package), arguments={}, run_name=cfg.name, experiment_name=experiment or cfg.name,
                namespace=namespace, enable_caching=cache)
        except ConfigError:
            raise
        except Exception as e:  # connection refused, DNS, auth, API errors: say which host and why
            raise SubmitError(f"--host {host}: could not submit the run: {type(e).__name__}: {e}") from None
