"""The Kubernetes manifests (deploy/k8s): every overlay renders with `kubectl kustomize`
and every object is valid for the pinned Kubernetes version (deploy/k8s/check.sh, with
kubernetes-validate), and the rendered objects keep the promises the deploy notes make:
one beat, probes and resources everywhere, a disruption budget for every Deployment
that runs more than one pod, autoscalers on Deployments that exist and on metrics that
/metrics exports, a Job that migrates, and a worker for every Celery queue."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CHECKOUT = Path(__file__).resolve().parents[2]
K8S = CHECKOUT / "deploy" / "k8s"
CHECK = K8S / "check.sh"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    """The environment check.sh needs: kubectl and kubernetes-validate on the PATH."""
    missing = []
    if shutil.which("kubectl") is None:
        missing.append("kubectl (apt-get install kubernetes-client)")
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        missing.append("kubernetes-validate (pip install -e '.[dev]')")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {' and '.join(missing)} installed (see .ci/run)")
        pytest.skip(f"{' and '.join(missing)} not installed - Kubernetes manifests not checked")
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _check(env: dict[str, str], out: Path, k8s: Path = K8S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(k8s / "check.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered(tools, tmp_path_factory) -> dict[str, list[dict]]:
    """Every overlay (and the base) rendered and validated: name -> its objects."""
    out = tmp_path_factory.mktemp("k8s")
    result = _check(tools, out)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ["base", *OVERLAYS]:
        assert f"ok   {name}:" in result.stdout, result.stdout
    return {
        name: [d for d in yaml.safe_load_all((out / f"{name}.yaml").read_text()) if d]
        for name in ["base", *OVERLAYS]
    }


def _of(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_there_is_a_staging_and_a_production_overlay():
    assert {"staging", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_beat_is_a_single_replica_replaced_not_rolled(rendered, name):
    beat = _of(rendered[name], "Deployment")["orchestrator-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(
        h["spec"]["scaleTargetRef"]["name"] == "orchestrator-beat"
        for h in _of(rendered[name], "HorizontalPodAutoscaler").values()
    )


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_every_container_has_probes_and_resources(rendered, name):
    deployments = _of(rendered[name], "Deployment")
    for deployment in deployments.values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in container, (deployment["metadata"]["name"], container)
    for workload in [*deployments.values(), *_of(rendered[name], "Job").values()]:
        for container in _containers(workload):
            resources = container.get("resources", {})
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where
    web = deployments["orchestrator-web"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "startupProbe"):
        assert web[probe]["httpGet"]["path"] == "/healthz"
        # Django answers 400 to a Host it does not allow: the probe names one it does.
        (host,) = [h["value"] for h in web[probe]["httpGet"]["httpHeaders"] if h["name"] == "Host"]
        config = next(iter(_of(rendered[name], "ConfigMap").values()))
        assert host in config["data"]["ALLOWED_HOSTS"].split(",")


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_a_disruption_budget_covers_every_deployment_of_more_than_one_pod(rendered, name):
    budgets = _of(rendered[name], "PodDisruptionBudget").values()
    for deployment in _of(rendered[name], "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        if deployment["spec"]["replicas"] > 1:
            assert len(covering) == 1, deployment["metadata"]["name"]
        if deployment["metadata"]["name"] == "orchestrator-beat":
            assert covering == []


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_autoscalers_target_deployments_that_exist_from_their_floor(rendered, name):
    deployments = _of(rendered[name], "Deployment")
    autoscalers = _of(rendered[name], "HorizontalPodAutoscaler")
    assert {"orchestrator-web", "orchestrator-worker-dispatch"} <= set(autoscalers)
    for autoscaler in autoscalers.values():
        assert autoscaler["apiVersion"] == "autoscaling/v2"
        target = autoscaler["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        assert target["name"] in deployments
        spec = autoscaler["spec"]
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        # An apply sets the Deployment's replicas: never below what the autoscaler keeps.
        assert deployments[target["name"]]["spec"]["replicas"] == spec["minReplicas"]
    dispatch = autoscalers["orchestrator-worker-dispatch"]["spec"]["metrics"]
    assert {m["type"] for m in dispatch} == {"External"}


@pytest.mark.django_db
def test_the_queue_depth_metrics_the_autoscaler_reads_are_exported(rendered, client):
    names = {
        m["external"]["metric"]["name"]
        for m in _of(rendered["base"], "HorizontalPodAutoscaler")["orchestrator-worker-dispatch"][
            "spec"
        ]["metrics"]
    }
    assert names == {"orchestrator_messages_due", "orchestrator_backlog_oldest_due_seconds"}
    exposition = client.get("/metrics").content.decode()
    for metric in names:
        assert f"# TYPE {metric} gauge" in exposition


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_the_job_migrates_and_every_queue_has_its_workers(rendered, name):
    (job,) = _of(rendered[name], "Job").values()
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-2:] == ["migrate", "--noinput"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"

    from orchestrator.celery import app

    consumed: list[str] = []
    for deployment in _of(rendered[name], "Deployment").values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if "worker" not in container["command"]:
            continue
        (queues,) = [a.split("=", 1)[1] for a in container["command"] if a.startswith("--queues=")]
        consumed.extend(queues.split(","))
    # Each queue is one worker group's: none left unconsumed, none shared.
    assert sorted(consumed) == sorted(q.name for q in app.conf.task_queues)


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_no_secret_value_is_committed(rendered, name):
    assert _of(rendered[name], "Secret") == {}
    for deployment in _of(rendered[name], "Deployment").values():
        for container in _containers(deployment):
            refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
            assert refs == ["orchestrator-secrets"]
            assert not any(
                k in {"SECRET_KEY", "DATABASE_URL"}
                for k in (e["name"] for e in container.get("env", []))
            )


def test_the_overlays_set_a_namespace_and_an_image_tag(rendered):
    for name in OVERLAYS:
        for obj in rendered[name]:
            assert obj["metadata"].get("namespace"), (name, obj["metadata"]["name"])
        for deployment in _of(rendered[name], "Deployment").values():
            for container in _containers(deployment):
                image = container["image"]
                assert ":" in image and not image.endswith(":latest"), (name, image)


def test_an_invalid_object_fails_the_check(tools, tmp_path):
    """The check can fail: a field Kubernetes does not know in one overlay."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    patch = copy / "overlays" / "staging" / "scale.yaml"
    patch.write_text(
        patch.read_text().replace("  replicas: 1\n", "  replicas: 1\n  replica: 2\n", 1)
    )
    result = _check(tools, tmp_path / "out", copy)
    assert result.returncode != 0
    assert "FAIL staging" in result.stderr
    assert "replica" in result.stdout + result.stderr
