"""One URL table, shared by the server handlers and the HTTP client.

Paths are relative to the server root; the server adds MLflow's ``--static-prefix`` when it
registers them, and the client joins them to its tracking URI (which includes any prefix).
"""

from __future__ import annotations

# MLflow's WORKSPACE_HEADER_NAME (3.10+): the request header that names the workspace. Here,
# not imported from MLflow: the CLI's HTTP path imports no MLflow.
WORKSPACE_HEADER = "X-MLFLOW-WORKSPACE"

# Under MLflow's own REST API prefix.
_API = "/api/2.0/mlflow/prompt-alias"
HISTORY = f"{_API}/history"
RESOLVE_AT = f"{_API}/resolve-at"
ROLLBACK = f"{_API}/rollback"
SET_IF = f"{_API}/set-if"
ALIASES = f"{_API}/aliases"
PROTECT = f"{_API}/protect"
UNPROTECT = f"{_API}/unprotect"
PROTECTED = f"{_API}/protected"
PROTECTION_HISTORY = f"{_API}/protection-history"
# The change feed (a long poll: events after a cursor, or the cursor after waiting).
WATCH = f"{_API}/watch"

# MLflow's own alias endpoint (set with POST, delete with DELETE).
STOCK_ALIAS = "/api/2.0/mlflow/registered-models/alias"

# The web page of alias timelines.
PAGE = "/prompt-alias/"

# The command that serves all of the above and the rest of MLflow (README, quickstart).
START_COMMAND = (
    "mlflow server --app-name prompt-alias --backend-store-uri <database URL> "
    "--registry-store-uri prompt-alias+<database URL>"
)


def unauthenticated_hint(sent_credentials: bool) -> str:
    """What to do about a server's 401 (MLflow's message says only "You are not
    authenticated"): the two variables MLflow's client (and this package's) read, and which
    of the two mistakes it was."""
    if sent_credentials:
        return (" The server refused the user name and password sent: check MLFLOW_TRACKING_USERNAME "
                "and MLFLOW_TRACKING_PASSWORD.")  # fmt: skip
    return " No credentials were sent: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."


# The refusal of protect and unprotect to a user who is not an administrator (MLflow's
# words are only "Permission denied").
ADMINISTRATORS_ONLY = (
    "Permission denied: only administrators protect and unprotect aliases (with workspaces on, "
    "also the workspace's administrators); ask one to run it."
)
