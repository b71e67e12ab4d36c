"""Worker functions for multi-process tests (importable by spawned processes)."""

from __future__ import annotations

import os
import random
import traceback
import warnings


_current_uri = None

# What a pool's forkserver imports once; every worker forked from it starts with MLflow loaded.
PRELOAD = ["_workers", "mlflow", "mlflow.genai", "mlflow_prompt_alias_store", "sqlalchemy"]


def context():
    """The multiprocessing context for pools of worker processes: a forkserver that has
    imported MLflow once (importing it takes some 3 s of CPU, and a test's pool starts 8 to 18
    workers). Forking from it is safe where forking a test process is not: it is a process of
    its own, single-threaded, holding no connection. It starts, at most once per test process,
    with MLflow's variables out of its environment, so that no test's tracking or registry URI
    of the moment outlives that test in it (each worker sets the URI it is given)."""
    import multiprocessing
    import multiprocessing.forkserver

    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MLFLOW_")}
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.update(saved)
    return forkserver


def _client(uri: str):
    """MLflow on ``uri``. A worker serves test after test: moving to another database, it
    lets go of the last one's stores and connections (before MLflow 3.8 every store has an
    engine of its own, which would otherwise keep its connections open)."""
    global _current_uri
    warnings.filterwarnings("ignore")
    import mlflow

    if _current_uri not in (None, uri):
        from conftest import _reset_mlflow_caches

        _reset_mlflow_caches()
    _current_uri = uri
    mlflow.set_tracking_uri(uri)
    return mlflow


def moves(uri: str, name: str, alias: str, count: int, versions: list[int], seed: int):
    """``count`` moves of one alias to random versions; returns this process's id and the
    errors seen."""
    mlflow = _client(uri)
    rng = random.Random(seed)
    errors = []
    for _ in range(count):
        try:
            mlflow.genai.set_prompt_alias(name=name, alias=alias, version=rng.choice(versions))
        except Exception:
            errors.append(traceback.format_exc(limit=3))
    return os.getpid(), errors


def race_new_aliases(uri: str, name: str, aliases: list[str], barrier, version: int):
    """Set each brand-new alias together with the other workers: all wait at ``barrier``
    (a ``multiprocessing.Manager().Barrier``), then write at once."""
    mlflow = _client(uri)
    errors = []
    for alias in aliases:
        barrier.wait()
        try:
            mlflow.genai.set_prompt_alias(name=name, alias=alias, version=version)
        except Exception:
            errors.append(traceback.format_exc(limit=3))
    return os.getpid(), errors


def mixed(uri: str, name: str, aliases: list[str], count: int, versions: list[int], seed: int):
    """Random sets and deletes over a few aliases."""
    mlflow = _client(uri)
    rng = random.Random(seed)
    errors = []
    for _ in range(count):
        alias = rng.choice(aliases)
        try:
            if rng.random() < 0.3:
                mlflow.genai.delete_prompt_alias(name=name, alias=alias)
            else:
                mlflow.genai.set_prompt_alias(name=name, alias=alias, version=rng.choice(versions))
        except Exception:
            errors.append(traceback.format_exc(limit=3))
    return os.getpid(), errors


def warm_up(_=None) -> int:
    """Import MLflow once per worker, so timed work does not include it."""
    _client("prompt-alias+sqlite:///unused.db")
    return os.getpid()


def compare_and_set(uri: str, name: str, rounds: list[tuple[str, int | None]], version: int, barrier):
    """Per round, together with the other workers (all wait at ``barrier``): move the round's
    alias from the round's expected version to this worker's own version. Returns this
    process's id and ("ok" | error code) per round."""
    import mlflow_prompt_alias_store as pas
    from mlflow.exceptions import MlflowException

    _client(uri)
    outcomes = []
    for alias, expected in rounds:
        barrier.wait()
        try:
            pas.set_alias_if(name, alias, version, expected)
            outcomes.append("ok")
        except MlflowException as e:
            outcomes.append(e.error_code)
    return os.getpid(), outcomes


def moves_for(uri: str, name: str, alias: str, seconds: float, versions: list[int], seed: int,
              done=None, others: int = 0, minimum: int = 0):  # fmt: skip
    """Moves of one alias to random versions for ``seconds``; returns this process's id, how
    many it made and the errors seen. Given ``done`` (a shared list), it goes on after
    ``seconds`` until ``others`` processes have added to it and it made ``minimum`` moves (at
    most four times ``seconds`` more): on a loaded machine a race counts its moves, not only
    its time."""
    import time

    mlflow = _client(uri)
    rng = random.Random(seed)
    errors, made = [], 0
    start = time.monotonic()
    deadline, cap = start + seconds, start + 5 * seconds

    def more() -> bool:
        now = time.monotonic()
        if now < deadline:
            return True
        return done is not None and now < cap and (made < minimum or len(done) < others)

    while more():
        try:
            mlflow.genai.set_prompt_alias(name=name, alias=alias, version=rng.choice(versions))
            made += 1
        except Exception:
            errors.append(traceback.format_exc(limit=3))
    return os.getpid(), made, errors


def mixed_for(uri: str, name: str, aliases: list[str], seconds: float, versions: list[int], seed: int):
    """Random sets and deletes over a few aliases for ``seconds``; returns this process's id,
    how many writes it made and the errors seen."""
    import time

    mlflow = _client(uri)
    rng = random.Random(seed)
    errors, made = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alias = rng.choice(aliases)
        try:
            if rng.random() < 0.3:
                mlflow.genai.delete_prompt_alias(name=name, alias=alias)
            else:
                mlflow.genai.set_prompt_alias(name=name, alias=alias, version=rng.choice(versions))
            made += 1
        except Exception:
            errors.append(traceback.format_exc(limit=3))
    return os.getpid(), made, errors


def rollbacks_for(uri: str, name: str, alias: str, seconds: float, versions: list[int], seed: int):
    """Moves of one alias through this package for ``seconds``, each followed by a rollback (an
    undo stack pops what it can; the refusals of an empty stack are not errors); returns this
    process's id, how many writes it made and the errors seen."""
    import time

    from mlflow.exceptions import MlflowException

    import mlflow_prompt_alias_store as pas

    mlflow = _client(uri)
    rng = random.Random(seed)
    errors, made = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            mlflow.genai.set_prompt_alias(name=name, alias=alias, version=rng.choice(versions))
            pas.rollback_alias(name, alias)
            made += 2
        except MlflowException as e:
            if e.error_code != "INVALID_STATE":
                errors.append(traceback.format_exc(limit=3))
        except Exception:
            errors.append(traceback.format_exc(limit=3))
    return os.getpid(), made, errors


def run(function: str, start, *args):
    """``function(*args)`` of this module: one pool map over workers doing different things.
    Each first imports what it writes with, then waits at ``start`` (a
    ``multiprocessing.Manager().Barrier`` of every task) so that their time windows are one
    window: on a loaded machine the processes' starts spread over tens of seconds, and a
    window spent waiting for the others' imports races nothing."""
    import mlflow.genai  # noqa: F401

    import mlflow_prompt_alias_store  # noqa: F401

    start.wait(timeout=600)
    return globals()[function](*args)


def rollbacks_only_for(uri: str, name: str, alias: str, seconds: float, _versions, seed: int,
                       done=None, minimum: int = 0):  # fmt: skip
    """Rollbacks of one alias through this package for ``seconds`` (refusals of an empty undo
    stack are not errors), and after that until ``minimum`` succeeded (at most four times
    ``seconds`` more); then it adds its id to ``done`` (a shared list), for the processes
    racing it. Returns this process's id, the events its calls returned (as dicts) and the
    errors seen."""
    import time

    from mlflow.exceptions import MlflowException

    import mlflow_prompt_alias_store as pas

    _client(uri)
    errors, returned = [], []
    start = time.monotonic()
    deadline, cap = start + seconds, start + 5 * seconds
    while time.monotonic() < deadline or (len(returned) < minimum and time.monotonic() < cap):
        try:
            returned.append(pas.rollback_alias(name, alias).to_dict())
        except MlflowException as e:
            if e.error_code != "INVALID_STATE":
                errors.append(traceback.format_exc(limit=3))
            time.sleep(0.01)
        except Exception:
            errors.append(traceback.format_exc(limit=3))
    if done is not None:
        done.append(os.getpid())
    return os.getpid(), returned, errors
