"""Alembic migrations of the metadata database; run them with :func:`kinoray.store.db.migrate`."""
