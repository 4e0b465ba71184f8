"""Flask extensions, created unbound and bound in ``create_app``."""
from flask_httpauth import HTTPBasicAuth, HTTPTokenAuth, MultiAuth
from flask_wtf.csrf import CSRFProtect
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData

# Explicit constraint names so Alembic migrations are identical on SQLite and
# PostgreSQL and constraints can be altered later.
naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=naming_convention))
# Bound only for the web surface (UI forms and HTMX requests); the JSON and
# sync APIs authenticate each request and are exempt.
csrf = CSRFProtect()

basic_auth = HTTPBasicAuth()
token_auth = HTTPTokenAuth(scheme="Bearer")
api_auth = MultiAuth(basic_auth, token_auth)
