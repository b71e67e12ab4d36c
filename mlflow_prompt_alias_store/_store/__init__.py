"""The store: everything that reads or writes the database.

Owns the registry store behind ``prompt-alias+…`` URIs (``registry.py``, assembled from one
mixin per concern), its one-statement reads (``fast_reads.py``), the journal's write side
(``journal.py``), the ORM models of the package's own tables (``models.py``) and their
migrations (``migrate.py``, ``migrations/``).

May import MLflow, SQLAlchemy, Alembic and the package's top-level modules (``_uri``,
``_entities``, ``_errors``); never the server (``_server``) or the client (``_client``).
"""
