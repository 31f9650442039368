"""Alembic's scripts for ORBIT's schema; ``Database.upgrade()`` runs them (no alembic.ini).

To add a revision after changing :mod:`orbit.db.models`, autogenerate it against a database
at the current head, then read and clean it up (keep plain SQLAlchemy types; value sets in
CHECK constraints are literals)::

    python - <<'EOF'
    from alembic import command
    from orbit.db import Database
    db = Database("sqlite:////tmp/orbit-rev.db"); db.upgrade()
    command.revision(db.alembic_config(), message="what changed", autogenerate=True)
    EOF

``tests/db`` then checks on SQLite and PostgreSQL that the upgraded schema equals the models.
"""
