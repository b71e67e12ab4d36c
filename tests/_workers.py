"""Worker functions for multi-process tests (importable by spawned processes)."""

from __future__ import annotations

import os
import random
import time
import traceback
import warnings


def _client(uri: str):
    warnings.filterwarnings("ignore")
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow


def moves(uri: str, name: str, alias: str, count: int, versions: list[int], seed: int):
    """``count`` moves of one alias to random versions; returns the errors seen."""
    mlflow = _client(uri)
    rng = random.Random(seed)
    errors = []
    for _ in range(count):
        try:
            mlflow.genai.set_prompt_alias(name=name, alias=alias, version=rng.choice(versions))
        except Exception:
            errors.append(traceback.format_exc(limit=3))
    return errors


def race_new_aliases(uri: str, name: str, aliases: list[str], start_at: list[float], version: int):
    """Set each brand-new alias at the agreed instant, all workers at once."""
    mlflow = _client(uri)
    errors = []
    for alias, t in zip(aliases, start_at):
        time.sleep(max(0.0, t - time.time()))
        try:
            mlflow.genai.set_prompt_alias(name=name, alias=alias, version=version)
        except Exception:
            errors.append(traceback.format_exc(limit=3))
    return errors


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
    return errors


def warm_up(_=None) -> int:
    """Import MLflow once per worker, so timed work does not include it."""
    _client("prompt-alias+sqlite:///unused.db")
    return os.getpid()



def compare_and_set(uri: str, name: str, rounds: list[tuple[str, int | None]], version: int,
                    start_at: list[float]):
    """Per round, at the agreed instant: move the round's alias from the round's expected
    version to this worker's own version. Returns ("ok" | error code) per round."""
    import mlflow_prompt_alias_store as pas
    from mlflow.exceptions import MlflowException

    _client(uri)
    outcomes = []
    for (alias, expected), t in zip(rounds, start_at):
        time.sleep(max(0.0, t - time.time()))
        try:
            pas.set_alias_if(name, alias, version, expected)
            outcomes.append("ok")
        except MlflowException as e:
            outcomes.append(e.error_code)
    return outcomes
