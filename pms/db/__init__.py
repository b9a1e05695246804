"""Postgres: the system of record (SQLAlchemy 2 models, sessions, Alembic migrations)."""
