"""The store: SQL tables, the database and its Alembic migrations, queries, and the photo files."""
