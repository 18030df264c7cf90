"""Who a request is (bearer tokens) and whether Kubernetes RBAC lets them do it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.apiserver.request import ResourceRequest
from sandbox.store import Store


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...]


# Who a request is when its token is not one the server handed out: the sandbox authenticates
# no one, so kubeconfigs with any token (tests put secrets in them) act as the cluster admin.
ADMIN = UserInfo("sandbox-admin", ("system:masters", "system:authenticated"))

# The RBAC kinds `ApiServer.load_rbac` takes: kind -> (Store resource, namespaced).
RBAC_KINDS = {
    "ServiceAccount": ("serviceaccounts", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
}


def service_account_user(namespace: str, name: str) -> UserInfo:
    """The user a ServiceAccount's token authenticates as."""
    return UserInfo(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
    )


def authz_verb(verb: str, req: ResourceRequest) -> str:
    """RBAC's name for the verb: deleting without a name is `deletecollection`."""
    return "deletecollection" if verb == "delete" and not req.name else verb


def authz_request(req: ResourceRequest) -> ResourceRequest:
    """The request as RBAC sees it: a namespace is its own namespace (a RoleBinding in it may
    grant `get` on it)."""
    if req.plural == "namespaces" and not req.group and req.name and not req.namespace:
        return ResourceRequest(req.group, req.version, req.plural, req.name, req.name, req.subresource)
    return req


def _listed(values: Any, wanted: str) -> bool:
    return isinstance(values, list) and ("*" in values or wanted in values)


def _rule_allows(rule: Any, verb: str, req: ResourceRequest) -> bool:
    if not isinstance(rule, dict):
        return False
    resource = req.plural + (f"/{req.subresource}" if req.subresource else "")
    names = rule.get("resourceNames") or []
    return (
        _listed(rule.get("verbs"), verb)
        and _listed(rule.get("apiGroups"), req.group)
        and _listed(rule.get("resources"), resource)
        and (not names or req.name in names)
    )


def _subject_is(subject: Any, user: UserInfo) -> bool:
    if not isinstance(subject, dict):
        return False
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "ServiceAccount":
        return user.name == f"system:serviceaccount:{subject.get('namespace')}:{name}"
    if kind == "User":
        return user.name == name
    return kind == "Group" and name in user.groups


def _role_rules(store: Store, ref: Any, namespace: str) -> list[Any]:
    """The rules of the Role or ClusterRole a binding refers to (none if it does not exist)."""
    if not isinstance(ref, dict):
        return []
    if ref.get("kind") == "ClusterRole":
        role = store.get("clusterroles", "", str(ref.get("name")))
    elif ref.get("kind") == "Role" and namespace:
        role = store.get("roles", namespace, str(ref.get("name")))
    else:
        role = None
    return list((role or {}).get("rules") or [])


def rbac_allows(store: Store, user: UserInfo, verb: str, req: ResourceRequest) -> bool:
    """Kubernetes RBAC over the Roles and bindings in `store`: ClusterRoleBindings grant their
    ClusterRole everywhere, RoleBindings grant their Role or ClusterRole in their namespace only."""
    if "system:masters" in user.groups:
        return True
    bindings = [(b, "") for b in store.list("clusterrolebindings")]
    if req.namespace:
        bindings += [(b, req.namespace) for b in store.list("rolebindings", req.namespace)]
    for binding, namespace in bindings:
        if any(_subject_is(s, user) for s in binding.get("subjects") or []) and any(
            _rule_allows(rule, verb, req) for rule in _role_rules(store, binding.get("roleRef"), namespace)
        ):
            return True
    return False
