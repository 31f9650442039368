"""The few libvirt calls the lab itself needs (the migration engine has its own driver).

libvirt's default error handler prints every error to stderr; it is silenced here once,
because every error is raised as an exception anyway and mapped to ORBIT's tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import libvirt

from orbit.errors import LabError

_STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


def _ignore(_ctx: object, _err: object) -> None:
    return None


libvirt.registerErrorHandler(_ignore, None)


@contextmanager
def connection(uri: str) -> Iterator[libvirt.virConnect]:
    """An open libvirt connection to ``uri``, closed afterwards."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise LabError(f"cannot connect to {uri}: {err.get_error_message()}") from err
    try:
        yield conn
    finally:
        with suppress(libvirt.libvirtError):
            conn.close()


def lib_version(uri: str) -> int:
    """The version of the host's libvirt daemon (major * 1e6 + minor * 1e3 + micro)."""
    with connection(uri) as conn:
        return int(conn.getLibVersion())


def state_name(dom: libvirt.virDomain) -> str:
    state, _reason = dom.state()
    return _STATE_NAMES.get(state, str(state))


def list_domains(uri: str) -> dict[str, str]:
    """Every domain defined or running on the host, by name, with its state.

    A domain that vanishes between the listing and the look at its state (an incoming
    migration the daemon just dropped) is left out.
    """
    domains = {}
    with connection(uri) as conn:
        for dom in conn.listAllDomains():
            try:
                domains[dom.name()] = state_name(dom)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise LabError(f"cannot read a domain's state on {uri}: {err}") from err
    return domains


_event_loop_started = False


def start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread (once per process).

    Without it, keepalive messages go unanswered and idle connections drop after ~30 s;
    it must be registered before the first connection is opened.
    """
    global _event_loop_started
    if _event_loop_started:
        return
    import threading

    libvirt.virEventRegisterDefaultImpl()

    def loop() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
    _event_loop_started = True


IMAGES_POOL_XML = """<pool type='dir'>
  <name>default</name>
  <target><path>/var/lib/libvirt/images</path></target>
</pool>"""


def ensure_images_pool(uri: str) -> None:
    """A 'default' directory pool over the host's images directory, active.

    With it, libvirt creates the destination's disk images itself for a block migration
    (it looks up the pool that holds the source's disk path on the destination).
    """
    with connection(uri) as conn:
        try:
            pool = conn.storagePoolLookupByName("default")
        except libvirt.libvirtError:
            pool = conn.storagePoolDefineXML(IMAGES_POOL_XML, 0)
        if not pool.isActive():
            pool.create(0)
        pool.setAutostart(1)
