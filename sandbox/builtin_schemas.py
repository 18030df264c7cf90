"""A compact built-in schema for VirtualService and DestinationRule (used without Istio's CRD files).

Same shape and rules as Istio's CRDs (networking.istio.io v1/v1beta1/v1alpha3) for the fields this
project reads and writes; parts it never touches (CORS, redirects, load balancer settings...) are
accepted as opaque objects so that other people's configuration still round-trips. Also the
ObjectMeta/ListMeta/Status/Patch schemas an OpenAPI v3 document refers to.
"""

from __future__ import annotations

from typing import Any

from sandbox.schema import GROUP, CrdInfo

VERSIONS = ("v1", "v1alpha3", "v1beta1")
Schema = dict[str, Any]


def _string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def _int32(**extra: Any) -> Schema:
    return {"type": "integer", "format": "int32", **extra}


def _uint32() -> Schema:
    return {"type": "integer", "minimum": 0, "maximum": 4294967295}


def _obj(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def _array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def _map(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def _opaque() -> Schema:
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _one_of(*keys: str) -> list[Schema]:
    """Istio's idiom for "at most one of these keys"."""
    return [{"not": {"anyOf": [{"required": [k]} for k in keys]}}, *({"required": [k]} for k in keys)]


def _duration() -> Schema:
    return _string(
        **{
            "x-kubernetes-validations": [
                {
                    "message": "must be a valid duration greater than 1ms",
                    "rule": "duration(self) >= duration('1ms')",
                }
            ]
        }
    )


_STRING_MATCH = _obj(
    {"exact": _string(), "prefix": _string(), "regex": _string()}, oneOf=_one_of("exact", "prefix", "regex")
)
_PERCENT = _obj({"value": {"type": "number", "format": "double"}})
_DESTINATION = _obj(
    {"host": _string(), "subset": _string(), "port": _obj({"number": _uint32()})}, required=("host",)
)
_HEADER_OPS = _obj({"add": _map(_string()), "remove": _array(_string()), "set": _map(_string())})
_HEADERS = _obj({"request": _HEADER_OPS, "response": _HEADER_OPS})

_HTTP_MATCH = _obj(
    {
        "name": _string(),
        "uri": _STRING_MATCH,
        "scheme": _STRING_MATCH,
        "method": _STRING_MATCH,
        "authority": _STRING_MATCH,
        "headers": _map(_STRING_MATCH),
        "queryParams": _map(_STRING_MATCH),
        "withoutHeaders": _map(_STRING_MATCH),
        "ignoreUriCase": {"type": "boolean"},
        "port": _uint32(),
        "sourceLabels": _map(_string()),
        "sourceNamespace": _string(),
        "gateways": _array(_string()),
        "statPrefix": _string(),
    }
)

_HTTP_ROUTE = _obj(
    {
        "name": _string(),
        "match": _array(_HTTP_MATCH),
        "route": _array(
            _obj(
                {"destination": _DESTINATION, "weight": _int32(), "headers": _HEADERS},
                required=("destination",),
            )
        ),
        "redirect": _opaque(),
        "directResponse": _opaque(),
        "delegate": _obj({"name": _string(), "namespace": _string()}),
        "rewrite": _obj(
            {
                "uri": _string(),
                "authority": _string(),
                "uriRegexRewrite": _obj({"match": _string(), "rewrite": _string()}),
            }
        ),
        "timeout": _duration(),
        "retries": _obj(
            {
                "attempts": _int32(),
                "perTryTimeout": _duration(),
                "retryOn": _string(),
                "retryRemoteLocalities": {"type": "boolean", "nullable": True},
            }
        ),
        "fault": _obj(
            {
                "delay": _obj(
                    {
                        "fixedDelay": _duration(),
                        "exponentialDelay": _duration(),
                        "percent": _int32(),
                        "percentage": _PERCENT,
                    },
                    oneOf=_one_of("fixedDelay", "exponentialDelay"),
                ),
                "abort": _obj(
                    {
                        "httpStatus": _int32(),
                        "grpcStatus": _string(),
                        "http2Error": _string(),
                        "percentage": _PERCENT,
                    },
                    oneOf=_one_of("httpStatus", "grpcStatus", "http2Error"),
                ),
            }
        ),
        "mirror": _DESTINATION,
        "mirrorPercent": {**_uint32(), "nullable": True},
        "mirrorPercentage": _PERCENT,
        "mirrors": _array(_opaque()),
        "corsPolicy": _opaque(),
        "headers": _HEADERS,
    }
)

_L4_ROUTE = _array(_obj({"destination": _DESTINATION, "weight": _int32()}, required=("destination",)))

VIRTUAL_SERVICE_SPEC = _obj(
    {
        "hosts": _array(_string()),
        "gateways": _array(_string()),
        "http": _array(_HTTP_ROUTE),
        "tcp": _array(_obj({"match": _array(_opaque()), "route": _L4_ROUTE})),
        "tls": _array(
            _obj(
                {
                    "match": _array(
                        _obj(
                            {"sniHosts": _array(_string())},
                            required=("sniHosts",),
                            **{"x-kubernetes-preserve-unknown-fields": True},
                        )
                    ),
                    "route": _L4_ROUTE,
                },
                required=("match",),
            )
        ),
        "exportTo": _array(_string()),
    }
)

_TLS_SETTINGS = _obj(
    {
        "mode": _string(enum=["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]),
        "clientCertificate": _string(),
        "privateKey": _string(),
        "caCertificates": _string(),
        "caCrl": _string(),
        "credentialName": _string(),
        "subjectAltNames": _array(_string()),
        "sni": _string(),
        "insecureSkipVerify": {"type": "boolean", "nullable": True},
    }
)

# Its durations carry Istio's CEL rule, as in the real CRD: a DestinationRule schema with rules is
# one where blocking schema errors make kube-apiserver skip the rules (and say so, a `<nil>` cause).
_OUTLIER_DETECTION = _obj(
    {"interval": _duration(), "baseEjectionTime": _duration()},
    **{"x-kubernetes-preserve-unknown-fields": True},
)

_TRAFFIC_POLICY = _obj(
    {
        "tls": _TLS_SETTINGS,
        "loadBalancer": _opaque(),
        "connectionPool": _opaque(),
        "outlierDetection": _OUTLIER_DETECTION,
        "portLevelSettings": _array(_opaque()),
        "tunnel": _opaque(),
        "proxyProtocol": _opaque(),
        "retryBudget": _opaque(),
    }
)

DESTINATION_RULE_SPEC = _obj(
    {
        "host": _string(),
        "trafficPolicy": _TRAFFIC_POLICY,
        "subsets": _array(
            _obj(
                {"name": _string(), "labels": _map(_string()), "trafficPolicy": _TRAFFIC_POLICY},
                required=("name",),
            )
        ),
        "exportTo": _array(_string()),
        "workloadSelector": _obj({"matchLabels": _map(_string())}),
    },
    required=("host",),
)


def _top(spec: Schema) -> Schema:
    return _obj({"spec": spec, "status": _opaque()})


def _age_column() -> dict[str, Any]:
    return {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"}


def crd_infos() -> list[CrdInfo]:
    vs_columns = [
        {"jsonPath": ".spec.gateways", "name": "Gateways", "type": "string"},
        {"jsonPath": ".spec.hosts", "name": "Hosts", "type": "string"},
        _age_column(),
    ]
    dr_columns = [{"jsonPath": ".spec.host", "name": "Host", "type": "string"}, _age_column()]
    categories = ("istio-io", "networking-istio-io")
    return [
        CrdInfo(
            GROUP,
            "virtualservices",
            "virtualservice",
            "VirtualService",
            "VirtualServiceList",
            ("vs",),
            categories,
            VERSIONS,
            "v1",
            True,
            {v: vs_columns for v in VERSIONS},
        ),
        CrdInfo(
            GROUP,
            "destinationrules",
            "destinationrule",
            "DestinationRule",
            "DestinationRuleList",
            ("dr",),
            categories,
            VERSIONS,
            "v1",
            True,
            {v: dr_columns for v in VERSIONS},
        ),
    ]


def schemas() -> dict[tuple[str, str], Schema]:
    found: dict[tuple[str, str], Schema] = {}
    for version in VERSIONS:
        found[("virtualservices", version)] = _top(VIRTUAL_SERVICE_SPEC)
        found[("destinationrules", version)] = _top(DESTINATION_RULE_SPEC)
    return found


# The Kubernetes meta types an OpenAPI v3 document for CRDs refers to (trimmed to what clients use).
_LOOSE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
META_SCHEMAS: dict[str, Schema] = {
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": _obj(
        {
            "annotations": _map(_string()),
            "creationTimestamp": _string(format="date-time"),
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
            "deletionTimestamp": _string(format="date-time"),
            "finalizers": _array(_string()),
            "generateName": _string(),
            "generation": {"type": "integer", "format": "int64"},
            "labels": _map(_string()),
            "managedFields": _array(_LOOSE),
            "name": _string(),
            "namespace": _string(),
            "ownerReferences": _array(_LOOSE),
            "resourceVersion": _string(),
            "selfLink": _string(),
            "uid": _string(),
        }
    ),
    "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta": _obj(
        {
            "continue": _string(),
            "remainingItemCount": {"type": "integer", "format": "int64"},
            "resourceVersion": _string(),
            "selfLink": _string(),
        }
    ),
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status": _obj(
        {
            "apiVersion": _string(),
            "code": _int32(),
            "details": _LOOSE,
            "kind": _string(),
            "message": _string(),
            "metadata": _LOOSE,
            "reason": _string(),
            "status": _string(),
        }
    ),
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch": {"type": "object"},
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions": _LOOSE,
}
