"""Tests of the database layer, on SQLite and on a private PostgreSQL server."""
