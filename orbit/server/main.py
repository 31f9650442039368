"""``orbit-server``: the API and the conductor in one process.

On first start it creates the schema and the user ``admin`` (role admin, project
``admin``); the password is ``$ORBIT_ADMIN_PASSWORD``, or generated and printed once on
stdout (never logged).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import threading
from pathlib import Path

import uvicorn
from sqlalchemy import select

from orbit.api.app import create_app
from orbit.api.deps import Services
from orbit.conductor.conductor import Conductor
from orbit.config import DEFAULT_BIND, ServerConfig, load_config
from orbit.db.database import Database, InstanceLock, ensure_sqlite_dir
from orbit.db.models import Host
from orbit.errors import ConfigError, OrbitError
from orbit.identity.service import ADMIN_USER, ensure_admin
from orbit.virt.driver import HypervisorDriver

log = logging.getLogger("orbit.server")
ADMIN_PASSWORD_ENV = "ORBIT_ADMIN_PASSWORD"
#: the cyclic garbage collector's first threshold (Python's default: 700 allocations)
GC_GEN0_THRESHOLD = 7000


#: ``--fake-hosts``: each fake VM has 512 MiB and sends 16 MiB per 0.1 s tick while it
#: dirties 2 MiB (a pre-copy of ~3.6 s), so that migrations overlap as real ones do
FAKE_TICK_S = 0.1
FAKE_VM_MIB = 512


def make_driver(
    name: str, *, fake_hosts: int = 0, fake_vms: int = 0, fake_socket: Path | None = None
) -> HypervisorDriver:
    """The hypervisor driver; ``fake`` with ``fake_hosts`` hosts fake://h1... holding
    ``fake_vms`` VMs each (vm-h1-1, ...), for demos and the control-plane benchmark; or
    the fake hosts a ``python -m orbit.virt.fakehosts`` process serves on ``fake_socket`` (shared by
    several orbit-server instances)."""
    if name == "fake" and fake_socket is not None:
        if fake_vms:
            raise ConfigError("with --fake-socket, the VMs are orbit.virt.fakehosts --vms")
        from orbit.virt.fakehosts import RemoteFakeDriver

        return RemoteFakeDriver(fake_socket)
    if name == "fake":
        from orbit.virt.fake import MIB, FakeDriver, FakeWorkload

        driver = FakeDriver(tick_s=FAKE_TICK_S if fake_hosts else 0.01)
        for i in range(1, fake_hosts + 1):
            uri = f"fake://h{i}"
            driver.add_host(uri)
            for j in range(1, fake_vms + 1):
                workload = FakeWorkload(
                    memory_bytes=FAKE_VM_MIB * MIB, bandwidth_bytes=16 * MIB, dirty_bytes=2 * MIB
                )
                driver.add_domain(uri, f"vm-h{i}-{j}", workload=workload)
        return driver
    if fake_hosts or fake_vms or fake_socket:
        raise ConfigError("--fake-hosts, --fake-vms and --fake-socket need --driver fake")
    from orbit.virt.libvirt_driver import LibvirtDriver

    return LibvirtDriver()


def register_fake_hosts(db: Database, count: int) -> None:
    """Register fake://h1 ... fake://hN (those not registered yet)."""
    with db.session() as session:
        known = set(session.scalars(select(Host.name)))
        for i in range(1, count + 1):
            if f"h{i}" not in known:
                session.add(Host(name=f"h{i}", uri=f"fake://h{i}"))


def build(
    config: ServerConfig,
    *,
    driver: HypervisorDriver | None = None,
    fake_hosts: int = 0,
    fake_vms: int = 0,
    fake_socket: Path | None = None,
) -> Services:
    """Database (schema upgraded, admin ensured), driver and conductor, not yet started."""
    if fake_hosts < 0 or fake_vms < 0:
        raise ConfigError("--fake-hosts and --fake-vms must be >= 0")
    ensure_sqlite_dir(config.database_url)
    lock = InstanceLock(config.database_url)  # held until the process ends
    db = Database(config.database_url)
    db.upgrade()
    with db.session() as session:
        try:
            generated = ensure_admin(session, password=os.environ.get(ADMIN_PASSWORD_ENV))
        except ConfigError as err:
            raise ConfigError(f"${ADMIN_PASSWORD_ENV} is refused: {err}") from err
    if generated is not None:
        # shown once, on the terminal that started the first run; never logged
        print(
            f"created user {ADMIN_USER} with password {generated} "
            f"(set {ADMIN_PASSWORD_ENV} to choose it)",
            flush=True,
        )
    driver = driver or make_driver(
        config.driver, fake_hosts=fake_hosts, fake_vms=fake_vms, fake_socket=fake_socket
    )
    if fake_hosts:
        register_fake_hosts(db, fake_hosts)
    conductor = Conductor(db, driver, config)
    services = Services(config=config, db=db, conductor=conductor)
    services.instance_lock = lock
    return services


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="orbit-server", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="TOML settings file (also $ORBIT_CONFIG)")
    p.add_argument("--bind", help=f"HOST:PORT to listen on (default {DEFAULT_BIND})")
    p.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in /var/lib/orbit)")
    p.add_argument("--driver", choices=("libvirt", "fake"), help="hypervisor driver")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument("--fake-hosts", type=int, default=0, metavar="N",
                   help="with --driver fake: N fake hosts fake://h1..., registered")  # fmt: skip
    p.add_argument("--fake-vms", type=int, default=0, metavar="M",
                   help="with --fake-hosts: M fake VMs (512 MiB) on each host")  # fmt: skip
    p.add_argument("--fake-socket", type=Path, metavar="PATH",
                   help="with --driver fake: the fake hosts that `python -m orbit.virt.fakehosts` "
                        "serves (with --fake-hosts N: registers fake://h1...hN)")  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(
            args.config,
            overrides={
                "bind": args.bind,
                "database_url": args.database_url,
                "driver": args.driver,
                "log_level": args.log_level,
            },
        )
        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        services = build(
            config,
            fake_hosts=args.fake_hosts,
            fake_vms=args.fake_vms,
            fake_socket=args.fake_socket,
        )
        host, port = config.host_port
        services.conductor.start()
        # in the background: requests are answered meanwhile
        threading.Thread(target=services.db.open_pool, name="open-pool", daemon=True).start()
    except OrbitError as err:
        print(f"orbit-server: {err}", file=sys.stderr)
        return 1
    log.info(
        "orbit-server listening url=%s database=%s", config.base_url, _safe(config.database_url)
    )
    app = create_app(services)
    _settle_garbage_collector()
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            loop="auto",  # uvloop, a dependency (see pyproject.toml); asyncio without it
            ssl_certfile=config.tls_cert_file or None,
            ssl_keyfile=config.tls_key_file or None,
        )
    finally:
        services.conductor.stop()
    return 0


def _settle_garbage_collector() -> None:
    """Exempt what start-up built from the collector and let it run less often. Start-up
    leaves ~170,000 objects (modules, SQLAlchemy and FastAPI structures) that every full
    collection walked again: one took 107-125 ms, holding the GIL, in the middle of a
    burst of requests. Frozen, they are never scanned; a tenfold first threshold makes the
    collections of young objects (a request allocates thousands) ten times fewer."""
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _safe(url: str) -> str:
    """The database URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


if __name__ == "__main__":
    sys.exit(main())
