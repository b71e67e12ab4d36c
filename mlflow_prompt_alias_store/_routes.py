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
