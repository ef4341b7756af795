"""Alembic environment: migrations run on the connection feedback.store.db.migrate() passes in, or on
`sqlalchemy.url` when Alembic's command line is used (`alembic -x url=... upgrade head`)."""

from alembic import context
from sqlalchemy import create_engine

from feedback.store.tables import Base

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    with create_engine(url).connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
