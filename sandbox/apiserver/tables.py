"""Server-side printing for `kubectl get`: the `Table` answer (columns and one row per object)
a client asks for with `Accept: application/json;as=Table;...`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.apiserver.request import ResourceRequest
from sandbox.apiserver.selectors import field_value
from sandbox.schema import CrdSchemas

Column = dict[str, Any]
RowCells = Callable[[dict[str, Any]], list[Any]]


def human_age(timestamp: str | None, now: float | None = None) -> str:
    """`kubectl get`'s AGE column: 45s, 5m10s, 3h, 2d..."""
    if not timestamp:
        return "<unknown>"
    try:
        created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return "<invalid>"
    seconds = max(0, int((now or time.time()) - created))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d" if days < 730 else f"{days // 365}y"


def wants_table(accept: str) -> bool:
    """Whether the client's first choice (of the Accept header) is a Table."""
    return "as=Table" in accept.split(",")[0]


def table(
    req: ResourceRequest,
    items: list[dict[str, Any]],
    schemas: CrdSchemas,
    query_string: str,
    resource_version: str | None,
) -> dict[str, Any]:
    """The Table for `items`; `resource_version` None for a single object's (no list metadata).
    Each row carries the object, its metadata only (the default), or nothing, by `includeObject`."""
    columns, cells = table_layout(req, schemas)
    include_object = (
        "Object"
        if "includeObject=Object" in query_string
        else ("None" if "includeObject=None" in query_string else "Metadata")
    )
    rows = []
    for obj in items:
        row: dict[str, Any] = {"cells": cells(obj)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object == "Metadata":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {} if resource_version is None else {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }


def table_layout(req: ResourceRequest, schemas: CrdSchemas) -> tuple[list[Column], RowCells]:
    """Column definitions and a row function, as the real server prints each resource."""
    if req.plural in _WORKLOAD_LAYOUTS and req.group in ("apps", "autoscaling"):
        return _WORKLOAD_LAYOUTS[req.plural]
    if req.is_crd:
        return _crd_layout(req, schemas)
    return _CORE_LAYOUTS.get(req.plural, _NAMESPACE_LAYOUT)


_NAME_COLUMN: Column = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace.",
}


def _column(name: str) -> Column:
    return {"name": name, "type": "string", "format": "", "priority": 0, "description": ""}


def _render_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _crd_layout(req: ResourceRequest, schemas: CrdSchemas) -> tuple[list[Column], RowCells]:
    """The CRD's additionalPrinterColumns for the version (those of priority 0, as kubectl shows)."""
    crd = schemas.crd_info(req.plural)
    printer = (crd.printer_columns.get(req.version) if crd else None) or []
    printer = [c for c in printer if not c.get("priority")]
    columns = [_NAME_COLUMN] + [
        {
            "name": c["name"],
            "type": "string" if c["type"] == "date" else c["type"],
            "format": "",
            "priority": 0,
            "description": c.get("description", ""),
        }
        for c in printer
    ]

    def crd_cells(obj: dict[str, Any]) -> list[Any]:
        cells: list[Any] = [obj["metadata"]["name"]]
        for column in printer:
            value = field_value(obj, column["jsonPath"].lstrip("."))
            cells.append(human_age(value) if column["type"] == "date" else _render_cell(value))
        return cells

    return columns, crd_cells


def _pod_cells(obj: dict[str, Any]) -> list[Any]:
    status = obj.get("status") or {}
    containers = (obj.get("spec") or {}).get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    return [
        obj["metadata"]["name"],
        f"{ready}/{len(containers)}",
        status.get("phase", "Unknown"),
        str(restarts),
        human_age(obj["metadata"].get("creationTimestamp")),
    ]


def _service_cells(obj: dict[str, Any]) -> list[Any]:
    spec = obj.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    return [
        obj["metadata"]["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP", "<none>"),
        "<none>",
        ports or "<none>",
        human_age(obj["metadata"].get("creationTimestamp")),
    ]


def _namespace_cells(obj: dict[str, Any]) -> list[Any]:
    return [
        obj["metadata"]["name"],
        (obj.get("status") or {}).get("phase", "Active"),
        human_age(obj["metadata"].get("creationTimestamp")),
    ]


def _event_cells(obj: dict[str, Any]) -> list[Any]:
    """As `kubectl get events` prints them: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE (and the
    name, a priority-1 column as on a real server: `-o wide` only)."""
    involved = obj.get("involvedObject") or {}
    event_time = str(obj.get("eventTime") or "")
    seen = obj.get("lastTimestamp") or (event_time.split(".")[0].rstrip("Z") + "Z" if event_time else None)
    return [
        human_age(seen),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        obj.get("message", ""),
        obj["metadata"]["name"],
    ]


_NAMESPACE_LAYOUT: tuple[list[Column], RowCells] = (
    [_NAME_COLUMN, _column("Status"), _column("Age")],
    _namespace_cells,
)
_CORE_LAYOUTS: dict[str, tuple[list[Column], RowCells]] = {
    "pods": (
        [_NAME_COLUMN, _column("Ready"), _column("Status"), _column("Restarts"), _column("Age")],
        _pod_cells,
    ),
    "services": (
        [
            _NAME_COLUMN,
            _column("Type"),
            _column("Cluster-IP"),
            _column("External-IP"),
            _column("Port(s)"),
            _column("Age"),
        ],
        _service_cells,
    ),
    "namespaces": _NAMESPACE_LAYOUT,
    "events": (
        [_column("Last Seen"), _column("Type"), _column("Reason"), _column("Object"), _column("Message"),
         {**_NAME_COLUMN, "priority": 1}],
        _event_cells,
    ),
}


def _deployment_cells(obj: dict[str, Any]) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        obj["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        str(status.get("updatedReplicas", 0)),
        str(status.get("availableReplicas", 0)),
        human_age(obj["metadata"].get("creationTimestamp")),
    ]


def _hpa_cells(obj: dict[str, Any]) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    target = spec.get("scaleTargetRef") or {}
    return [
        obj["metadata"]["name"],
        f"{target.get('kind', '')}/{target.get('name', '')}",
        str(spec.get("minReplicas", 1)),
        str(spec.get("maxReplicas", "")),
        str(status.get("currentReplicas", 0)),
        human_age(obj["metadata"].get("creationTimestamp")),
    ]


# apps/v1 and autoscaling/v2 (sandbox.apiserver.workloads), as kubectl prints them.
_WORKLOAD_LAYOUTS: dict[str, tuple[list[Column], RowCells]] = {
    "deployments": (
        [_NAME_COLUMN, _column("Ready"), _column("Up-to-date"), _column("Available"), _column("Age")],
        _deployment_cells,
    ),
    "horizontalpodautoscalers": (
        [_NAME_COLUMN, _column("Reference"), _column("MinPods"), _column("MaxPods"), _column("Replicas"),
         _column("Age")],
        _hpa_cells,
    ),
}
