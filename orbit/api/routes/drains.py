"""ORBIT extension: drain a host (every VM off it, planned), and follow or cancel a drain."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from orbit.api.deps import AuthDep, BodyDep, ServicesDep, SessionDep
from orbit.api.errors import ApiError
from orbit.api.routes.compute import MAX_ID
from orbit.api.views import drain_view
from orbit.conductor.drains import DrainRequest, Planned, item_of_move
from orbit.db.models import Drain
from orbit.errors import DrainNotFound

router = APIRouter(tags=["drains"])

DRAIN_KEYS = {"to", "post_copy", "max_parallel", "deadline_s", "plan_only"}


def _request(host: str, body: dict[str, Any], default_parallel: int) -> tuple[DrainRequest, bool]:
    unknown = set(body) - DRAIN_KEYS
    if unknown:
        raise ApiError(400, f"unexpected fields: {', '.join(sorted(unknown))}")
    targets = body.get("to")
    if targets is not None and (
        not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets)
    ):
        raise ApiError(400, "'to' must be a list of host names, or null for any enabled host")
    flags = {}
    for key in ("post_copy", "plan_only"):
        value = body.get(key, False)
        if not isinstance(value, bool):
            raise ApiError(400, f"invalid input for field '{key}': {value!r} is not a boolean")
        flags[key] = value
    parallel = body.get("max_parallel", default_parallel)
    if isinstance(parallel, bool) or not isinstance(parallel, int):
        raise ApiError(
            400, f"invalid input for field 'max_parallel': {parallel!r} is not an integer"
        )
    deadline = body.get("deadline_s")
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, int | float)
    ):
        raise ApiError(400, f"invalid input for field 'deadline_s': {deadline!r} is not a number")
    request = DrainRequest(
        host_name=host,
        targets=list(dict.fromkeys(targets)) if targets is not None else None,
        post_copy=flags["post_copy"],
        max_parallel=parallel,
        deadline_s=float(deadline) if deadline is not None else None,
    )
    return request, flags["plan_only"]


def plan_view(request: DrainRequest, planned: Planned) -> dict[str, Any]:
    plan = planned.plan
    items = [item_of_move(m) for m in plan.moves]
    for server, why in planned.unmovable:
        items.append({"server_id": server.id, "name": server.name, "memory_mib": server.memory_mib,
                      "dest": None, "state": "stuck", "reason": why, "outcome": why})  # fmt: skip
    for item in items:
        if item["dest"] is None and item["state"] == "pending":
            item["state"], item["outcome"] = "stuck", item["reason"]
    head = {
        "host": request.host_name,
        **{k: v for k, v in asdict(request).items() if k != "host_name"},
        "parallel": plan.parallel,
        "predicted_s": round(plan.predicted_s, 1),
        "within_deadline": plan.within_deadline,
        "notes": plan.notes,
    }
    return drain_view(None, plan={"head": head, "items": items})


@router.post("/orbit-hosts/{name}/drain")
def drain_host(
    name: str, body: BodyDep, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> JSONResponse:
    """Drain a host: disable it and move every VM off it by a plan (``plan_only``: show the
    plan, change nothing)."""
    auth.require_admin("draining a host")
    request, plan_only = _request(name, body, services.config.max_outgoing_per_host)
    drains = services.conductor.drains
    planned = drains.plan(session, request)
    if plan_only:
        return JSONResponse({"drain": plan_view(request, planned)})
    drain = drains.start(
        session, request, planned, user_id=auth.user_id, project_id=auth.project_id
    )
    return JSONResponse({"drain": drain_view(drain)}, status_code=202)


def _drain(session: SessionDep, drain_id: int) -> Drain:
    drain = session.get(Drain, drain_id) if 0 < drain_id < MAX_ID else None
    if drain is None:
        raise DrainNotFound(f"drain {drain_id} could not be found")
    return drain


@router.get("/orbit-drains")
def list_drains(request: Request, auth: AuthDep, session: SessionDep) -> dict[str, Any]:
    """Drains, newest first (filter: host)."""
    auth.require_admin("listing drains")
    query = select(Drain).order_by(Drain.id.desc())
    host = request.query_params.get("host")
    if host:
        query = query.where(Drain.host_name == host)
    return {"drains": [drain_view(d) for d in session.scalars(query)]}


@router.get("/orbit-drains/{drain_id}")
def show_drain(drain_id: int, auth: AuthDep, session: SessionDep) -> dict[str, Any]:
    """One drain: its plan and each VM's state and outcome."""
    auth.require_admin("showing a drain")
    return {"drain": drain_view(_drain(session, drain_id))}


@router.delete("/orbit-drains/{drain_id}", status_code=202)
def cancel_drain(
    drain_id: int, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> JSONResponse:
    """Cancel a drain: nothing more starts; migrations under way finish by their rules."""
    auth.require_admin("cancelling a drain")
    drain = _drain(session, drain_id)
    services.conductor.drains.cancel(session, drain)
    session.refresh(drain)
    return JSONResponse({"drain": drain_view(drain)}, status_code=202)
