"""`nmtrec submit`: compiles with the shared factory and starts a run through kfp.Client."""
import kfp
import pytest
import yaml

from nmtrec.pipelines.cli import main


class FakeClient:
    """Records what a real kfp.Client would send; reads the package while it exists."""
    calls: list = []

    def __init__(self, host=None, namespace="kubeflow", **kwargs):
        self.host, self.namespace = host, namespace

    def create_run_from_pipeline_package(self, pipeline_file, arguments=None, run_name=None, experiment_name=None,
                                         namespace=None, enable_caching=None, **kwargs):
        docs = list(yaml.safe_load_all(open(pipeline_file).read()))
        FakeClient.calls.append({"host": self.host, "client_namespace": self.namespace, "package": docs,
                                 "arguments": arguments, "run_name": run_name, "experiment": experiment_name,
                                 "namespace": namespace, "enable_caching": enable_caching})
        return kfp.client.client.RunPipelineResult(self, type("Run", (), {"run_id": "run-123"})())


@pytest.fixture
def fake_kfp(monkeypatch):
    FakeClient.calls = []
    monkeypatch.setattr(kfp, "Client", FakeClient)
    return FakeClient.calls


@pytest.fixture
def cfg_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"name": "sub-test", "tasks": ["like", "click"],
                                 "cluster": {"gpus": 2, "retries": 1}}))
    return f


def test_submit_sends_the_compiled_package(fake_kfp, cfg_file, tmp_path, capsys):
    assert main(["submit", "--config", str(cfg_file), "--host", "https://kfp.example.com/pipeline",
                 "--experiment", "onboarding", "--namespace", "team-a"]) == 0
    (call,) = fake_kfp
    assert call["host"] == "https://kfp.example.com/pipeline" and call["client_namespace"] == "team-a"
    assert (call["run_name"], call["experiment"], call["namespace"]) == ("sub-test", "onboarding", "team-a")
    assert call["enable_caching"] is True  # caching on by default
    assert "run-123" in capsys.readouterr().out
    # the package is the same one `nmtrec compile` writes for this config
    assert main(["compile", "--config", str(cfg_file), "--output", str(tmp_path / "p.yaml")]) == 0
    compiled = list(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    assert call["package"] == compiled
    tasks = call["package"][0]["root"]["dag"]["tasks"]
    assert tasks["train-stage-2"]["retryPolicy"]["maxRetryCount"] == 1


def test_submit_no_cache_and_default_experiment(fake_kfp, cfg_file):
    assert main(["submit", "--config", str(cfg_file), "--host", "http://localhost:8888", "--no-cache"]) == 0
    (call,) = fake_kfp
    assert call["enable_caching"] is False
    assert call["experiment"] == "sub-test" and call["client_namespace"] == "kubeflow"


def test_submit_unreachable_host_is_a_clear_error(cfg_file, capsys):
    # a real client against a closed port: connection refused
    assert main(["submit", "--config", str(cfg_file), "--host", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "--host http://127.0.0.1:9: could not submit the run" in err and "refused" in err


def test_submit_host_must_be_a_url(fake_kfp, cfg_file, capsys):
    assert main(["submit", "--config", str(cfg_file), "--host", "kfp.example.com"]) == 2
    assert "--host 'kfp.example.com': expected an http(s):// URL" in capsys.readouterr().err
    assert fake_kfp == []
