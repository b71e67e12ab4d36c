"""The server: ``mlflow server --app-name prompt-alias`` and ``--app-name prompt-alias-auth``.

Owns the app factories (``app.py``; ``auth.py``, the same on MLflow's basic-auth app, under
its permission model), the REST endpoints (``handlers.py``), the native ASGI read routes
(``native_reads.py``), the web page and its templates (``web.py``, ``templates/``), what the
endpoints and page may show the user asking (``access.py``), and the check that the server's
registry store is ours (``context.py``).

May import MLflow, Flask/Starlette, the store (``_store``) and the package's top-level
modules; never the client (``_client``). Nothing outside this subpackage imports it, except
MLflow through the entry point.
"""
