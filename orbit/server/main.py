"""``orbit-server``: the API and the conductor in one process.

On first start it creates the schema and the user ``admin`` (role admin, project
``admin``); the password is ``$ORBIT_ADMIN_PASSWORD``, or generated and printed once on
stdout (never logged).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from orbit.api.app import create_app
from orbit.api.deps import Services
from orbit.conductor.conductor import Conductor
from orbit.config import DEFAULT_BIND, ServerConfig, load_config
from orbit.db.database import Database, ensure_sqlite_dir
from orbit.errors import ConfigError, OrbitError
from orbit.identity.service import ADMIN_USER, ensure_admin
from orbit.virt.driver import HypervisorDriver

log = logging.getLogger("orbit.server")
ADMIN_PASSWORD_ENV = "ORBIT_ADMIN_PASSWORD"


def make_driver(name: str) -> HypervisorDriver:
    if name == "fake":
        from orbit.virt.fake import FakeDriver

        return FakeDriver()
    from orbit.virt.libvirt_driver import LibvirtDriver

    return LibvirtDriver()


def build(config: ServerConfig, *, driver: HypervisorDriver | None = None) -> Services:
    """Database (schema upgraded, admin ensured), driver and conductor, not yet started."""
    ensure_sqlite_dir(config.database_url)
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
    conductor = Conductor(db, driver or make_driver(config.driver), config)
    return Services(config=config, db=db, conductor=conductor)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="orbit-server", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="TOML settings file (also $ORBIT_CONFIG)")
    p.add_argument("--bind", help=f"HOST:PORT to listen on (default {DEFAULT_BIND})")
    p.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in /var/lib/orbit)")
    p.add_argument("--driver", choices=("libvirt", "fake"), help="hypervisor driver")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
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
        services = build(config)
        host, port = config.host_port
        services.conductor.start()
    except OrbitError as err:
        print(f"orbit-server: {err}", file=sys.stderr)
        return 1
    log.info(
        "orbit-server listening url=%s database=%s", config.base_url, _safe(config.database_url)
    )
    try:
        uvicorn.run(
            create_app(services),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            ssl_certfile=config.tls_cert_file or None,
            ssl_keyfile=config.tls_key_file or None,
        )
    finally:
        services.conductor.stop()
    return 0


def _safe(url: str) -> str:
    """The database URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


if __name__ == "__main__":
    sys.exit(main())
