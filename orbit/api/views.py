"""Database rows to Nova-shaped JSON (no HTTP here, no database queries either)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orbit.db.models import Host, HostState, Migration, MigrationSample, Server, ServerStatus
from orbit.db.types import utcnow

NOVA_VM_STATES = {
    ServerStatus.ACTIVE.value: "active",
    ServerStatus.MIGRATING.value: "active",
    ServerStatus.PAUSED.value: "paused",
    ServerStatus.SHUTOFF.value: "stopped",
    ServerStatus.ERROR.value: "error",
    ServerStatus.UNKNOWN.value: "active",
}


def iso(ts: datetime | None) -> str | None:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None


def server_link(base: str, server_id: str) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": f"{base}/v2.1/servers/{server_id}"},
        {"rel": "bookmark", "href": f"{base}/servers/{server_id}"},
    ]


def server_summary(server: Server, base: str) -> dict[str, Any]:
    return {"id": server.id, "name": server.name, "links": server_link(base, server.id)}


def server_detail(server: Server, base: str, active: Migration | None) -> dict[str, Any]:
    host = server.host.name if server.host else None
    return {
        **server_summary(server, base),
        "status": server.status,
        "tenant_id": server.project_id or "",
        "user_id": "",
        "created": iso(server.created_at),
        "updated": iso(server.updated_at),
        "hostId": host or "",
        "addresses": {},
        "accessIPv4": "",
        "accessIPv6": "",
        "image": "",
        "flavor": {
            "id": f"orbit-{server.memory_mib}m-{server.vcpus}c",
            "links": [],
        },
        "metadata": {},
        "key_name": None,
        "config_drive": "",
        "progress": 0,
        "OS-EXT-AZ:availability_zone": "nova",
        "OS-EXT-SRV-ATTR:host": host,
        "OS-EXT-SRV-ATTR:hypervisor_hostname": host,
        "OS-EXT-SRV-ATTR:instance_name": server.name,
        "OS-EXT-STS:power_state": server.power_state,
        "OS-EXT-STS:vm_state": NOVA_VM_STATES.get(server.status, "active"),
        "OS-EXT-STS:task_state": "migrating" if active is not None else None,
        "os-extended-volumes:volumes_attached": [],
        # ORBIT extension: what the dashboard and CLI show without a second request
        "orbit:memory_mib": server.memory_mib,
        "orbit:vcpus": server.vcpus,
        "orbit:migration_id": active.id if active is not None else None,
    }


def migration_view(m: Migration, base: str) -> dict[str, Any]:
    """Nova's server-migration fields (2.23+), plus ORBIT's record under 'orbit'."""
    src = m.source_host.name if m.source_host else None
    dst = m.dest_host.name if m.dest_host else None
    return {
        "id": m.id,
        "uuid": m.uuid,
        "server_uuid": m.server_id,
        "instance_uuid": m.server_id,
        "status": m.status,
        "migration_type": m.migration_type,
        "source_compute": src,
        "source_node": src,
        "dest_compute": dst,
        "dest_node": dst,
        "dest_host": m.dest_host.migration_address if m.dest_host else None,
        "old_instance_type_id": None,
        "new_instance_type_id": None,
        "memory_total_bytes": m.memory_total_bytes,
        "memory_processed_bytes": m.memory_processed_bytes,
        "memory_remaining_bytes": m.memory_remaining_bytes,
        "disk_total_bytes": m.disk_total_bytes,
        "disk_processed_bytes": m.disk_processed_bytes,
        "disk_remaining_bytes": m.disk_remaining_bytes,
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
        "links": [{"rel": "self", "href": f"{base}/v2.1/servers/{m.server_id}/migrations/{m.id}"}],
        "orbit": {
            "server_name": m.server.name,
            "settings": {
                "post_copy": m.post_copy,
                "migration_policy": m.policy,
                "post_copy_after_iterations": m.post_copy_after_iterations,
                "block_migration": m.block_migration,
                "disk_over_commit": m.disk_over_commit,
                "completion_timeout_s": m.completion_timeout_s,
                "downtime_limit_ms": m.downtime_limit_ms,
                "bandwidth_mib_s": m.bandwidth_mib_s,
                "postcopy_weight": m.postcopy_weight,
            },
            "prediction": m.prediction,
            "transfer_rate_bytes_s": m.transfer_rate_bytes_s,
            "pass1_dirtied_bytes": m.pass1_dirtied_bytes,
            "pass1_s": m.pass1_s,
            "iterations": m.iterations,
            "postcopy_requests": m.postcopy_requests,
            "downtime_ms": m.downtime_ms,
            "switch_at_s": m.switch_at_s,
            "total_s": m.total_s,
            "error": m.error,
            "decisions": list(m.decisions),
            "resume_attempts": sum(1 for d in m.decisions if d.get("action") == "resume-postcopy"),
            "paused_for_s": paused_for_s(m),
            "phase_times": dict(m.phase_times),
            "started_at": iso(m.started_at),
            "finished_at": iso(m.finished_at),
        },
    }


def sample_view(s: MigrationSample) -> dict[str, Any]:
    return {
        "elapsed_s": s.elapsed_s,
        "iteration": s.iteration,
        "memory_total_bytes": s.memory_total_bytes,
        "memory_processed_bytes": s.memory_processed_bytes,
        "memory_remaining_bytes": s.memory_remaining_bytes,
        "dirty_rate_bytes_s": s.dirty_rate_bytes_s,
        "bandwidth_bytes_s": s.bandwidth_bytes_s,
        "disk_remaining_bytes": s.disk_remaining_bytes,
        "postcopy": s.postcopy,
        "postcopy_requests": s.postcopy_requests,
    }


def hypervisor_view(h: Host, index: int, *, detail: bool, running_vms: int) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": index,
        "hypervisor_hostname": h.name,
        "state": "up" if h.state == HostState.UP.value else "down",
        "status": "enabled",
    }
    if detail:
        view.update(
            {
                "hypervisor_type": "QEMU",
                "hypervisor_version": 0,
                "host_ip": _address_of(h),
                "memory_mb": h.memory_total_mib,
                "free_ram_mb": h.memory_free_mib,
                "memory_mb_used": max(0, h.memory_total_mib - h.memory_free_mib),
                "vcpus": h.vcpus,
                "vcpus_used": 0,
                "running_vms": running_vms,
                "local_gb": 0,
                "local_gb_used": 0,
                "free_disk_gb": 0,
                "disk_available_least": 0,
                "current_workload": 0,
                "cpu_info": "{}",
                "service": {"host": h.name, "id": index, "disabled_reason": None},
                "orbit:uri": h.uri,
                "orbit:migration_address": h.migration_address,
                "orbit:last_seen_at": iso(h.last_seen_at),
            }
        )
    return view


def service_view(h: Host, index: int) -> dict[str, Any]:
    return {
        "id": index,
        "binary": "nova-compute",
        "host": h.name,
        "zone": "nova",
        "status": "enabled",
        "state": "up" if h.state == HostState.UP.value else "down",
        "updated_at": iso(h.last_seen_at),
        "disabled_reason": None,
        "forced_down": False,
    }


def host_view(h: Host, servers: int) -> dict[str, Any]:
    return {
        "name": h.name,
        "uri": h.uri,
        "migration_address": h.migration_address,
        "link_mib_s": h.link_mib_s,
        "state": h.state,
        "memory_total_mib": h.memory_total_mib,
        "memory_free_mib": h.memory_free_mib,
        "vcpus": h.vcpus,
        "servers": servers,
        "last_seen_at": iso(h.last_seen_at),
    }


def _address_of(h: Host) -> str:
    from urllib.parse import urlsplit

    return urlsplit(h.uri).hostname or ""


def paused_for_s(m: Migration) -> float | None:
    """How long a postcopy-paused migration has been paused (None unless paused)."""
    if m.status != "postcopy-paused" or m.started_at is None:
        return None
    pauses = [d["at_s"] for d in m.decisions if d.get("action") == "pause-postcopy"]
    paused_at = max(pauses) if pauses else m.phase_times.get("postcopy-paused")
    if paused_at is None:
        return None
    return round((utcnow() - m.started_at).total_seconds() - float(paused_at), 1)
