import pytest

from istio_canary.core.pods import metric_label_problems, summarize_version_pods
from istio_canary.core.validation import ValidationError


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


# --------------------------------------------------------------------------- metric labels


def labelled(name, **labels):
    return {"metadata": {"name": name, "namespace": "bookinfo", "labels": {"app": "reviews", **labels}}}


REVISION = "service.istio.io/canonical-revision"
APP_VERSION = "app.kubernetes.io/version"


def test_pods_whose_metrics_carry_the_version_have_no_problems():
    pods = [
        labelled("reviews-v2-a", version="v2"),
        labelled("reviews-v2-b", version="v2", **{REVISION: "v2"}),
    ]
    assert metric_label_problems(pods, "v2", "version") == []
    # destination_canonical_revision: the first of its labels present decides.
    both = labelled("p", **{REVISION: "2.0", APP_VERSION: "2.0"})
    assert metric_label_problems([both], "2.0", APP_VERSION) == []
    # `version` is read only when the labels before it are missing.
    app_and_version = labelled("p", **{APP_VERSION: "2.0", "version": "v2"})
    assert metric_label_problems([app_and_version], "2.0", APP_VERSION) == []
    assert metric_label_problems([labelled("p", **{REVISION: "v2"})], "v2", REVISION) == []
    assert metric_label_problems([], "v2", REVISION) == []


def test_a_higher_precedence_label_with_another_value_is_named_with_its_fix():
    pods = [labelled("reviews-v2-abc", **{REVISION: "2.0", APP_VERSION: "v2"})]
    assert metric_label_problems(pods, "v2", APP_VERSION) == [
        "pod bookinfo/reviews-v2-abc: Istio reports destination_canonical_revision='2.0' from label "
        "service.istio.io/canonical-revision, not 'v2': remove that label or set it to 'v2'"
    ]


def test_destination_version_comes_only_from_the_version_label():
    # app.kubernetes.io/version is not read for destination_version.
    pods = [labelled("reviews-v2-abc", **{APP_VERSION: "v2"}), labelled("reviews-v2-def", version="v1")]
    assert metric_label_problems(pods, "v2", "version") == [
        "pod bookinfo/reviews-v2-abc: Istio reports destination_version='unknown' (no label version), "
        "not 'v2': set label version to 'v2'",
        "pod bookinfo/reviews-v2-def: Istio reports destination_version='v1' from label version, "
        "not 'v2': set it to 'v2'",
    ]


def test_canonical_revision_falls_back_through_istios_labels_to_latest():
    none = [labelled("reviews-v2-abc")]
    assert metric_label_problems(none, "v2", REVISION) == [
        "pod bookinfo/reviews-v2-abc: Istio reports destination_canonical_revision='latest' (none of the "
        "labels service.istio.io/canonical-revision, app.kubernetes.io/version, version), not 'v2': "
        "set label service.istio.io/canonical-revision to 'v2'"
    ]
    # A lower-precedence label answers when the release's own label is missing.
    lower = [labelled("reviews-v2-abc", version="2.0")]
    assert metric_label_problems(lower, "v2", REVISION) == [
        "pod bookinfo/reviews-v2-abc: Istio reports destination_canonical_revision='2.0' from label version, "
        "not 'v2': set label service.istio.io/canonical-revision to 'v2' (Istio reads it before version)"
    ]


def test_an_unreported_version_label_is_refused():
    with pytest.raises(ValidationError) as err:
        metric_label_problems([labelled("p", track="v2")], "v2", "track")
    assert err.value.field == "version_label" and err.value.value == "track"
