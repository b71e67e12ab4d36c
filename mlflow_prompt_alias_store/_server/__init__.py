"""The server: ``mlflow server --app-name prompt-alias``.

Owns the app factory (``app.py``, the ``mlflow.app`` entry point), the REST endpoints
(``handlers.py``), the native ASGI read routes (``native_reads.py``), the web page and its
templates (``web.py``, ``templates/``), and the check that the server's registry store is
ours (``context.py``).

May import MLflow, Flask/Starlette, the store (``_store``) and the package's top-level
modules; never the client (``_client``). Nothing outside this subpackage imports it, except
MLflow through the entry point.
"""
