from istio_canary.core.pods import summarize_version_pods


def pod(name, *, ready=True, sidecar=True, phase="Running", native_sidecar=False):
    containers = [{"name": "reviews"}]
    init = []
    if sidecar and native_sidecar:
        init.append({"name": "istio-proxy", "restartPolicy": "Always"})
    elif sidecar:
        containers.append({"name": "istio-proxy"})
    return {
        "metadata": {"name": name},
        "spec": {"containers": containers, "initContainers": init},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_ready_pods_with_sidecar_count():
    summary = summarize_version_pods("v2", [pod("a"), pod("b", native_sidecar=True)])
    assert summary.ok and summary.ready_with_sidecar == 2 and summary.problems == []


def test_missing_sidecar_and_not_ready_are_named():
    summary = summarize_version_pods("v2", [pod("a", sidecar=False), pod("b", ready=False)])
    assert not summary.ok
    assert "a has no istio-proxy" in summary.describe()
    assert "b is not Ready" in summary.describe()


def test_no_pods_is_not_ok():
    summary = summarize_version_pods("v2", [])
    assert not summary.ok and "no pods match" in summary.describe()
