"""Fault injection for upcoming writes: the queue (`Faults`), the answer each fault kind gives,
and the `/sandbox/faults` control endpoint."""

from __future__ import annotations

import json
import threading
from typing import Any

from sandbox.apiserver.errors import ApiError, bad_request, conflict, method_not_allowed
from sandbox.apiserver.request import ResourceRequest


class Faults:
    """Fault injection for upcoming writes (create/update/patch/delete of Istio objects).

    A queue of segments, each "let `after` writes through, then fail the next `count`";
    `arm` replaces the queue, `arm(..., append=True)` adds a segment after the queued ones,
    so one plan can say e.g. "skip the lock write, then 2 timeouts, then 13 errors".
    Reads are never faulted.
    """

    KINDS = ("error500", "timeout", "conflict", "forbidden")
    DEFAULT_TIMEOUT_SECONDS = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[dict[str, Any]] = []
        self.injected = 0  # faults answered since the server started (for tests and status)
        self.stopping = threading.Event()  # set on server close: a "timeout" sleep ends early

    def arm(
        self,
        kind: str,
        count: int = 1,
        timeout_seconds: float | None = None,
        *,
        after: int = 0,
        append: bool = False,
    ) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(self.KINDS)}, not {kind!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"fault count must be a whole number >= 0, not {count!r}")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"fault after must be a whole number >= 0, not {after!r}")
        seconds = self.DEFAULT_TIMEOUT_SECONDS if timeout_seconds is None else float(timeout_seconds)
        if not 0 <= seconds <= 3600:  # also refuses NaN
            raise ValueError(f"fault timeout_seconds must be in [0, 3600], not {timeout_seconds!r}")
        segment = {"kind": kind, "count": count, "after": after, "timeout_seconds": seconds}
        with self._lock:
            self._queue = [*self._queue, segment] if append else [segment]
            self._drop_spent()

    def disarm(self) -> None:
        with self._lock:
            self._queue = []

    def _drop_spent(self) -> None:
        while self._queue and self._queue[0]["count"] == 0:
            self._queue.pop(0)

    def take(self) -> dict[str, Any] | None:
        """The fault segment for this write ({kind, timeout_seconds, ...}), if one is due (and count it)."""
        with self._lock:
            self._drop_spent()
            if not self._queue:
                return None
            head = self._queue[0]
            if head["after"] > 0:
                head["after"] -= 1
                return None
            head["count"] -= 1
            self.injected += 1
            due = dict(head)
            self._drop_spent()
            return due

    def state(self) -> dict[str, Any]:
        """The next segment's kind/count/after/timeout_seconds (kind None when nothing is armed),
        the whole queue, and how many faults were injected so far."""
        with self._lock:
            head = self._queue[0] if self._queue else None
            return {
                "kind": head["kind"] if head else None,
                "count": head["count"] if head else 0,
                "after": head["after"] if head else 0,
                "timeout_seconds": head["timeout_seconds"] if head else self.DEFAULT_TIMEOUT_SECONDS,
                "queue": [dict(s) for s in self._queue],
                "injected": self.injected,
            }


def injected_error(due: dict[str, Any], req: ResourceRequest, stopping: threading.Event) -> ApiError:
    """The answer for a due fault segment (a "timeout" first waits, unless the server stops)."""
    kind = due["kind"]
    if kind == "error500":
        return ApiError(500, "InternalError", "Internal error occurred: injected fault (sandbox)")
    if kind == "timeout":
        # As kube-apiserver answers a request that ran past its deadline: 504 after a wait.
        stopping.wait(due["timeout_seconds"])
        return ApiError(
            504,
            "Timeout",
            "Timeout: request did not complete within the allowed duration "
            "(injected fault, sandbox); the write was not applied",
        )
    if kind == "conflict":
        return conflict(req.group, req.plural, req.name or "")
    # "forbidden" is not transient: what a client sees when RBAC or an admission policy refuses it.
    return ApiError(
        403, "Forbidden", f'{req.plural} "{req.name or ""}" is forbidden: injected fault (sandbox)'
    )


def control_faults(faults: Faults, method: str, body: bytes) -> dict[str, Any]:
    """`/sandbox/faults`: POST arms (JSON {kind, count, after, timeout_seconds, append}), DELETE
    disarms, GET only reads; every answer is the state afterwards."""
    if method == "DELETE":
        faults.disarm()
    elif method == "POST":
        try:
            request = json.loads(body or b"{}")
            faults.arm(
                request["kind"],
                request.get("count", 1),
                request.get("timeout_seconds"),
                after=request.get("after", 0),
                append=bool(request.get("append", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise bad_request(
                f"fault request needs {{kind, count[, after, timeout_seconds, append]}}: {exc}"
            ) from exc
    elif method != "GET":
        raise method_not_allowed("use GET, POST or DELETE on /sandbox/faults")
    return faults.state()
