"""IstioHook: VirtualServices, DestinationRules and pods through the official Kubernetes client.

Built on the cncf-kubernetes provider's KubernetesHook (connection `kubernetes_default`:
kubeconfig path or content, or in-cluster). Every update is a read-modify-write with the
resourceVersion that was read: on 409 the object is read again and the same *intent* (a
pure edit function) is applied again, so a concurrent writer's unrelated change survives.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from kubernetes import client as k8s

GROUP = "networking.istio.io"
SUPPORTED_API_VERSIONS = ("v1", "v1beta1")
PLURALS = {"VirtualService": "virtualservices", "DestinationRule": "destinationrules"}
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
# Events are best effort: a release step waits at most this long for one.
EVENT_TIMEOUT_SECONDS = 5.0

T = TypeVar("T")
Edit = Callable[[dict[str, Any]], dict[str, Any]]


class IstioApiError(RuntimeError):
    """The Kubernetes API refused or failed a request; says which object and why."""

    def __init__(self, action: str, status: int | None, reason: str) -> None:
        self.status = status
        super().__init__(f"{action} failed{f' (HTTP {status})' if status else ''}: {reason}")


class ObjectNotFoundError(IstioApiError):
    pass


class ConflictRetriesExhaustedError(IstioApiError):
    pass


@dataclass(frozen=True)
class WriteResult:
    """What an update did. `before`/`after` are whole objects as the server returned them."""

    kind: str
    namespace: str
    name: str
    before: dict[str, Any]
    after: dict[str, Any]
    changed: bool
    written: bool
    attempts: int

    @property
    def resource_version(self) -> str:
        return str(self.after.get("metadata", {}).get("resourceVersion", ""))


def _comparable(obj: dict[str, Any]) -> tuple[Any, Any, Any]:
    meta = obj.get("metadata") or {}
    return obj.get("spec"), meta.get("labels") or {}, meta.get("annotations") or {}


def _status_reason(exc: Exception) -> tuple[int | None, str]:
    """Status code and the server's message from an ApiException (or any other error)."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    if body:
        try:
            return status, json.loads(body).get("message") or str(body)
        except (ValueError, AttributeError):
            return status, str(body)
    return status, getattr(exc, "reason", None) or str(exc)


@dataclass(frozen=True)
class ApiRetries:
    """How the hook retries: 409 conflicts (re-read and re-apply the edit), transient errors
    (backoff doubling from `backoff_seconds`), and how long one API request may take."""

    max_conflict_retries: int
    max_transient_retries: int
    backoff_seconds: float
    request_timeout_seconds: float


class IstioHook(BaseHook):
    conn_name_attr = "kubernetes_conn_id"
    default_conn_name = "kubernetes_default"
    conn_type = "kubernetes"
    hook_name = "Istio (Kubernetes)"

    def __init__(
        self,
        kubernetes_conn_id: str = default_conn_name,
        *,
        api_version: str = "v1",
        max_conflict_retries: int = 5,
        max_transient_retries: int = 4,
        backoff_seconds: float = 0.5,
        request_timeout_seconds: float = 15.0,
    ) -> None:
        super().__init__()
        if api_version not in SUPPORTED_API_VERSIONS:
            raise ValueError(f"istio_api_version={api_version!r}: must be one of {SUPPORTED_API_VERSIONS}")
        self.kubernetes_conn_id = kubernetes_conn_id
        self.api_version = api_version
        self.retries = ApiRetries(
            max_conflict_retries, max_transient_retries, backoff_seconds, request_timeout_seconds
        )

    # -- clients, built on first use so DAG parsing never touches them --------------------

    @cached_property
    def kube_hook(self) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.kubernetes_conn_id)

    @cached_property
    def api_client(self) -> k8s.ApiClient:
        return self.kube_hook.api_client

    @cached_property
    def custom_objects(self) -> k8s.CustomObjectsApi:
        from kubernetes import client

        return client.CustomObjectsApi(api_client=self.api_client)

    @cached_property
    def core_v1(self) -> k8s.CoreV1Api:
        from kubernetes import client

        return client.CoreV1Api(api_client=self.api_client)

    def get_conn(self) -> Any:
        return self.api_client

    # -- transport -----------------------------------------------------------------------

    def _with_transient_retries(self, action: str, call: Callable[[], T]) -> T:
        """Run `call`, retrying 5xx/429 answers and network errors with exponential backoff."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        for attempt in range(1, self.retries.max_transient_retries + 2):
            try:
                return call()
            except ApiException as exc:
                status, reason = _status_reason(exc)
                if status == 404:
                    raise ObjectNotFoundError(action, status, reason) from exc
                if status not in TRANSIENT_STATUS or attempt > self.retries.max_transient_retries:
                    if status == 409:
                        raise
                    raise IstioApiError(action, status, reason) from exc
                problem = f"HTTP {status}: {reason}"
            except Urllib3Error as exc:
                if attempt > self.retries.max_transient_retries:
                    raise IstioApiError(action, None, f"network error: {exc}") from exc
                problem = f"network error: {type(exc).__name__}"
            delay = self.retries.backoff_seconds * 2 ** (attempt - 1)
            self.log.warning(
                "%s: %s; retry %d/%d in %.1fs", action, problem, attempt, self.retries.max_transient_retries, delay
            )
            time.sleep(delay)
        raise AssertionError("unreachable")

    # -- Istio objects -------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        plural = PLURALS[kind]
        return self._with_transient_retries(
            f"get {kind} {namespace}/{name}",
            lambda: self.custom_objects.get_namespaced_custom_object(
                GROUP, self.api_version, namespace, plural, name,
                _request_timeout=self.retries.request_timeout_seconds,
            ),
        )

    def get_virtual_service(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get("VirtualService", namespace, name)

    def get_destination_rule(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get("DestinationRule", namespace, name)

    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, namespace, name)
        except ObjectNotFoundError:
            return None

    def list(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        """Every `kind` object of `namespace`, or of all namespaces when it is None."""
        plural = PLURALS[kind]
        if namespace is None:
            response = self._with_transient_retries(
                f"list {kind} in all namespaces",
                lambda: self.custom_objects.list_cluster_custom_object(
                    GROUP, self.api_version, plural, _request_timeout=self.retries.request_timeout_seconds,
                ),
            )
        else:
            response = self._with_transient_retries(
                f"list {kind} in {namespace}",
                lambda: self.custom_objects.list_namespaced_custom_object(
                    GROUP, self.api_version, namespace, plural, _request_timeout=self.retries.request_timeout_seconds,
                ),
            )
        return list(response.get("items") or [])

    def update(
        self, kind: str, namespace: str, name: str, edit: Edit, *, dry_run: bool = False
    ) -> WriteResult:
        """Apply the pure `edit` to the live object and write it if it changed.

        `edit` receives the object as read and returns the desired object; it may raise to
        refuse (lock held by another release, owned route missing...). On 409 Conflict the
        object is re-read and `edit` applied again, at most `max_conflict_retries` times.
        """
        from kubernetes.client.exceptions import ApiException

        action = f"update {kind} {namespace}/{name}"
        for attempt in range(1, self.retries.max_conflict_retries + 2):
            current = self.get(kind, namespace, name)
            desired = edit(current)
            if _comparable(desired) == _comparable(current):
                return WriteResult(kind, namespace, name, current, current, False, False, attempt)
            if dry_run:
                return WriteResult(kind, namespace, name, current, desired, True, False, attempt)
            body = {**desired, "metadata": {**desired["metadata"]}}
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                stored = self._with_transient_retries(
                    action,
                    lambda body=body: self.custom_objects.replace_namespaced_custom_object(
                        GROUP, self.api_version, namespace, PLURALS[kind], name, body,
                        _request_timeout=self.retries.request_timeout_seconds,
                    ),
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.log.warning(
                    "%s: 409 Conflict (someone else wrote resourceVersion %s first); re-reading and "
                    "re-applying the same change (%d/%d)",
                    action, current["metadata"]["resourceVersion"], attempt, self.retries.max_conflict_retries,
                )
                time.sleep(self.retries.backoff_seconds * attempt / 2)
                continue
            return WriteResult(kind, namespace, name, current, stored, True, True, attempt)
        raise ConflictRetriesExhaustedError(
            action, 409, f"still conflicting after {self.retries.max_conflict_retries} retries"
        )

    # -- workloads -----------------------------------------------------------------------

    def list_deployments(self, namespace: str) -> list[dict[str, Any]]:
        """Every apps/v1 Deployment of `namespace`, as dicts. All of them: a Deployment's own
        labels need not be its pods', so the caller matches pod templates (core/capacity.py)."""
        from kubernetes import client

        apps = client.AppsV1Api(api_client=self.api_client)
        response = self._with_transient_retries(
            f"list deployments.apps in {namespace}",
            lambda: apps.list_namespaced_deployment(
                namespace, _preload_content=False, _request_timeout=self.retries.request_timeout_seconds
            ),
        )
        return list(json.loads(response.data).get("items", []))

    def list_horizontal_pod_autoscalers(self, namespace: str) -> list[dict[str, Any]]:
        """Every autoscaling/v2 HorizontalPodAutoscaler of `namespace`, as dicts."""
        from kubernetes import client

        autoscaling = client.AutoscalingV2Api(api_client=self.api_client)
        response = self._with_transient_retries(
            f"list horizontalpodautoscalers.autoscaling in {namespace}",
            lambda: autoscaling.list_namespaced_horizontal_pod_autoscaler(
                namespace, _preload_content=False, _request_timeout=self.retries.request_timeout_seconds
            ),
        )
        return list(json.loads(response.data).get("items", []))

    def find_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Service as a dict (raw JSON, as for pods), or None when it does not exist."""
        try:
            response = self._with_transient_retries(
                f"get Service {namespace}/{name}",
                lambda: self.core_v1.read_namespaced_service(
                    name, namespace, _preload_content=False, _request_timeout=self.retries.request_timeout_seconds
                ),
            )
        except ObjectNotFoundError:
            return None
        return json.loads(response.data)

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        """Pods matching every label of `selector`, as dicts."""
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        # Raw JSON, not the client's typed models: we need dicts, and the models refuse pods
        # with fields a runtime has not filled in yet (e.g. an empty imageID while starting).
        response = self._with_transient_retries(
            f"list pods {namespace} -l {label_selector}",
            lambda: self.core_v1.list_namespaced_pod(
                namespace, label_selector=label_selector, _preload_content=False,
                _request_timeout=self.retries.request_timeout_seconds,
            ),
        )
        return list(json.loads(response.data).get("items", []))

    # -- events --------------------------------------------------------------------------

    def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a core/v1 Event (see core/events.py) and return it as stored.

        One try with a short timeout and no retries: events are best effort and a release
        step must not wait on them. Raises IstioApiError (403 when the Role lacks `create` on
        events, 409 when an event of that name exists, None for a network error).
        """
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        action = f"create Event {namespace}/{(body.get('metadata') or {}).get('name')}"
        try:
            response = self.core_v1.create_namespaced_event(
                namespace, body, _preload_content=False,
                _request_timeout=min(EVENT_TIMEOUT_SECONDS, self.retries.request_timeout_seconds),
            )
        except ApiException as exc:
            raise IstioApiError(action, *_status_reason(exc)) from exc
        except Urllib3Error as exc:
            raise IstioApiError(action, None, f"network error: {exc}") from exc
        return dict(json.loads(response.data))
