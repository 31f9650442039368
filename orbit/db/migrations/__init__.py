"""Alembic's scripts for ORBIT's schema (run them with ``Database.upgrade()``)."""
