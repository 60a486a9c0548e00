"""Init container of the chart's embedded MLflow (basic-auth app): make the auth store's two
admin users match the chart's Secret before the server starts.

* the human admin (MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD), and
* the operator's own user (MLFLOW_OPERATOR_USERNAME / MLFLOW_OPERATOR_PASSWORD). MLflow
  lets only admins create users, and the operator creates one user per workload namespace.

Each start re-applies the Secret's passwords, so the Secret is the one place to rotate them
(edit it, restart the Pod). The store is the one `database_uri` of MLFLOW_AUTH_CONFIG_PATH.
Nothing here prints a password. The tests run this same file (tests/plugins/mlflow_server.py).
"""

from __future__ import annotations

import os
import sys

from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

MIN_PASSWORD = 12  # what MLflow's own bootstrap demands of the admin password


def users() -> list[tuple[str, str]]:
    pairs = [("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"),
             ("MLFLOW_OPERATOR_USERNAME", "MLFLOW_OPERATOR_PASSWORD")]
    found = []
    for user_var, password_var in pairs:
        username, password = os.environ.get(user_var, ""), os.environ.get(password_var, "")
        if not username or len(password) < MIN_PASSWORD:
            sys.exit(f"{user_var} must be set and {password_var} at least {MIN_PASSWORD} characters long")
        found.append((username, password))
    return found


def main() -> None:
    config = read_auth_config()
    store = SqlAlchemyStore()
    store.init_db(config.database_uri)
    for username, password in users():
        if store.has_user(username):
            store.update_user(username, password=password, is_admin=True)
            print(f"MLflow user {username!r}: password and admin flag set from the Secret")
        else:
            store.create_user(username, password, is_admin=True)
            print(f"MLflow user {username!r}: created (admin)")


if __name__ == "__main__":
    main()
