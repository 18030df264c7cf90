"""The sandbox's Kubernetes API stand-in: enough of the real HTTP API for the official Python
client and kubectl to work unmodified against VirtualService, DestinationRule, Pod, Service,
Namespace and Event.

What it does as a real API server would: discovery, OpenAPI v3 built from the CRD schemas,
get/list/watch/create/update/patch/delete, resourceVersion preconditions (409), 404, 422 with
field causes from CRD-schema validation, label and field selectors, server-side Table printing
(for `kubectl get`), and Istio's webhook rules (negative or all-zero weights are rejected;
unused routes and missing subsets become `Warning` headers, which kubectl prints).

Checked against a real kube-apiserver (tests/integration/test_apiserver_contract.py sends the
pipeline's requests to both): unknown fields are pruned with a `Warning` (the default
`fieldValidation=Warn`; `Strict` answers 400, `Ignore` prunes silently); an update must carry
`metadata.resourceVersion` (422) and a matching `metadata.uid` if it has one (409); a body the
real decoder cannot read (no kind, another apiVersion, labels that are not strings) is a 400;
schema errors that stop the CRD's CEL rules add the real `<nil>` cause; a resource the server
does not serve is a plain-text `404 page not found`; and RBAC is enforced for tokens from
`ApiServer.service_account_token` (Roles and bindings loaded with `load_rbac`), authorization
coming before everything else, as on a real server. Any other bearer token is the sandbox's
admin (group system:masters): the sandbox authenticates no one.

Where it differs, on purpose: strategic merge patch and server-side apply answer 415; Pods,
Services, Namespaces, Deployments (apps/v1) and HorizontalPodAutoscalers (autoscaling/v2)
are read-only (seeded into the Store directly); Events take create, get,
list, watch and delete (core/v1 validation and field selectors as kube-apiserver's, so
`kubectl describe` lists an object's events); and Istio's validating webhook is emulated (a
bare kube-apiserver has no istiod to call).

Test hooks: `server.audit` records every resource request (with `fault` set on injected
answers); `server.faults.arm(kind, count, after=N)` makes upcoming writes fail (500, a slow
504 timeout, a 409 conflict or a 403), also over HTTP: `POST /sandbox/faults`
`{"kind", "count", "after", "timeout_seconds", "append"}`, `GET` (state), `DELETE` (disarm).

The package's modules: `server` (ApiServer, make_api_server), `handler` (routing, authorization,
audit) over `crud` (custom resource verbs), `core` (read-only Pods, Services, Namespaces), `workloads` (read-only Deployments, HPAs), `events` and
`watch`; `decoding` and `admission` (what a write goes through), `patch`, `selectors`,
`tables` (kubectl's Table answers), `discovery` (discovery and OpenAPI documents), `rbac`,
`faults`, `errors` (Status answers) and `request` (URL paths).
"""

from sandbox.apiserver.admission import istio_admission
from sandbox.apiserver.faults import Faults
from sandbox.apiserver.server import ApiServer, make_api_server

__all__ = ["ApiServer", "Faults", "istio_admission", "make_api_server"]
