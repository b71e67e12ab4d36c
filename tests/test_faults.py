"""Writers that die or lose their connection mid-transaction: afterwards the alias and the
journal still agree, and nobody was told a write succeeded that did not."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy

import mlflow
import mlflow.genai
from mlflow.exceptions import MlflowException

from mlflow_prompt_alias_store._store.alias_writes import AliasWritesMixin

from _journal_check import check_journal, read_state
from conftest import _reset_mlflow_caches

# The child widens the window it is killed in: after its alias change (and so the trigger's
# event) is flushed, inside the open transaction that holds the prompt's lock, it announces
# itself and waits.
_CHILD = textwrap.dedent(
    """
    import sys, time, warnings
    warnings.filterwarnings("ignore")
    import mlflow, mlflow.genai
    from mlflow_prompt_alias_store._store.alias_writes import AliasWritesMixin

    original = AliasWritesMixin._point_alias
    def point_then_hang(self, session, *args, **kwargs):
        changed = original(self, session, *args, **kwargs)
        session.flush()
        print("IN_WRITE", flush=True)
        time.sleep(120)
        return changed
    AliasWritesMixin._point_alias = point_then_hang
    mlflow.set_tracking_uri(sys.argv[1])
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)
    print("RETURNED", flush=True)
    """
)


def _prepare(uri):
    mlflow.set_tracking_uri(uri)
    for i in (1, 2, 3):
        mlflow.genai.register_prompt(name="qa", template=f"v{i} {{{{q}}}}")
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)


def test_writer_killed_mid_write(plugin_uri):
    _prepare(plugin_uri)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, plugin_uri], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "IN_WRITE"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        assert "RETURNED" not in child.stdout.read()
    finally:
        if child.poll() is None:
            child.kill()
    _reset_mlflow_caches()
    # The killed transaction left nothing behind and holds no lock.
    _, current = read_state(plugin_uri)
    assert current[("qa", "production")] == 1
    check_journal(plugin_uri)
    mlflow.set_tracking_uri(plugin_uri)
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=3)
    chain = check_journal(plugin_uri)[("qa", "production")]
    assert [(e.action, e.from_version, e.to_version) for e in chain] == [
        ("set", None, 1), ("move", 1, 3)]  # fmt: skip


@pytest.mark.postgres
def test_postgres_backend_terminated_mid_transaction(postgres_uri, postgres_databases, mocker):
    _prepare(postgres_uri)
    admin = postgres_databases.admin
    original = AliasWritesMixin._point_alias

    def point_then_lose_connection(self, session, *args, **kwargs):
        changed = original(self, session, *args, **kwargs)
        session.flush()  # the alias row and the trigger's event, not yet committed
        pid = session.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        return changed

    mocker.patch.object(AliasWritesMixin, "_point_alias", point_then_lose_connection)
    with pytest.raises(MlflowException) as e:
        mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)
    # MLflow's own translation of a lost connection; not retried, not reported as success.
    assert e.value.error_code == "TEMPORARILY_UNAVAILABLE"
    # psycopg 3 (SQLAlchemy 2.1's default driver) and psycopg2 (2.0's) word it differently.
    assert re.search("terminating connection|server closed the connection", e.value.message)
    mocker.stopall()
    _, current = read_state(postgres_uri)
    assert current[("qa", "production")] == 1
    check_journal(postgres_uri)
    # The store recovers (the pool drops the dead connection) and the next write lands.
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)
    chain = check_journal(postgres_uri)[("qa", "production")]
    assert [(e.action, e.to_version) for e in chain] == [("set", 1), ("move", 2)]
