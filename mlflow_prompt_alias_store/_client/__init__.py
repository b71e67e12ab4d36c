"""The client: ``PromptAliasClient`` (``client.py``) and the module-level functions bound to
the current tracking URI, with the REST backend (``rest.py``) it uses for an ``http(s)://``
server running ``--app-name prompt-alias``, and the CLI's HTTP transport (``http.py``), which
imports neither MLflow nor anything that does; ``auth.py`` adds MLflow's basic-auth client for
``--app-name prompt-alias-auth``.

May import MLflow, the store (``_store``, for ``prompt-alias+`` URIs in-process) and the
package's top-level modules (``_routes`` is the URL table shared with the server); never
the server (``_server``).
"""
