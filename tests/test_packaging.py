"""The package as users get it: the built wheel and sdist carry every file, the wheel installs
non-editable into a fresh virtual environment and works there, the tests themselves run on
the installed wheel, and the package's imports run one way without cycles."""

from __future__ import annotations

import ast
import fcntl
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import mlflow
import mlflow.genai
import mlflow_prompt_alias_store
from mlflow_prompt_alias_store import _compat

# What a release ships, built and installed as users get it (make test-quick leaves it out).
pytestmark = pytest.mark.release

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "mlflow_prompt_alias_store"
DIST_NAME = "mlflow-prompt-alias-store"


def _package_files(root: Path) -> set[str]:
    """Every file of the package in the source tree, as paths relative to ``root``'s parent."""
    return {
        str(path.relative_to(root.parent))
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, str]:
    """``python -m build`` as a user or a release job runs it: sdist, then the wheel built
    from that sdist, in an isolated build environment. Returns (wheel, sdist, output)."""
    out = tmp_path_factory.mktemp("dist")
    # Without this, setuptools says only that byte-compiling is disabled (an environment
    # setting of this machine, not a packaging problem).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # setuptools writes build/ and the egg-info into the checkout: under the lock `make wheel`
    # takes (CI builds other lanes' wheels from the same checkout at the same time, and
    # removes both; an sdist once lost its file list halfway), removed afterwards as it does.
    with open(ROOT / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            result = subprocess.run(
                [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                capture_output=True, text=True, timeout=600, env=env, cwd=out,
            )  # fmt: skip
        finally:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
            shutil.rmtree(ROOT / "mlflow_prompt_alias_store.egg-info", ignore_errors=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return wheel, sdist, output


def test_build_prints_no_packaging_warning(built):
    _, _, output = built
    warnings = [line for line in output.splitlines() if "warning" in line.lower()]
    assert warnings == []


def test_wheel_and_sdist_carry_every_package_file(built):
    wheel, sdist, _ = built
    expected = _package_files(SOURCE)
    # What the package cannot run without, named, so that an empty tree cannot pass.
    migrations = {f for f in expected if "/_store/migrations/versions/0" in f and f.endswith(".py")}
    templates = {f for f in expected if f.startswith("mlflow_prompt_alias_store/_server/templates/")}
    assert len(migrations) >= 2 and len(templates) >= 3
    assert "mlflow_prompt_alias_store/_store/migrations/script.py.mako" in expected
    assert "mlflow_prompt_alias_store/_store/migrations/env.py" in expected
    assert "mlflow_prompt_alias_store/py.typed" in expected

    with zipfile.ZipFile(wheel) as zf:
        in_wheel = {n for n in zf.namelist() if n.startswith("mlflow_prompt_alias_store/")}
        entry_points = zf.read(
            next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        ).decode()
    assert expected - in_wheel == set()
    assert in_wheel - expected == set()  # nothing stale from an old build/ either

    with tarfile.open(sdist) as tf:
        prefix = tf.getnames()[0].split("/")[0] + "/"
        in_sdist = {n[len(prefix):] for n in tf.getnames()}
    assert expected - in_sdist == set()
    assert {"setup.cfg", "setup.py", "pyproject.toml", "README.md"} <= in_sdist

    # Every entry point the source's setup.cfg declares, pointing at a module that exists.
    for line in entry_points.splitlines():
        if "=" in line and ":" in line:
            module = line.split("=", 1)[1].strip().split(":")[0]
            assert module.replace(".", "/") + ".py" in in_wheel, line


def test_the_wheel_never_makes_pip_replace_a_users_mlflow(built):
    """No floor on MLflow: installed beside MLflow 3.0 (or 2.x), pip keeps it, and the package
    says at first use that it cannot run there (tests/test_compat.py); below 4 only."""
    wheel, _, _ = built
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requirements = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [r for r in requirements if r.split("<")[0].split(">")[0].split(";")[0].strip() == "mlflow"] == ["mlflow<4"]


def test_tests_import_the_installed_wheel():
    """`make test` (and so CI) installs the wheel non-editable and runs pytest with -P."""
    package_dir = Path(mlflow_prompt_alias_store.__file__).resolve().parent
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert package_dir.parent == site_packages, package_dir
    assert str(ROOT) not in sys.path and "" not in sys.path
    direct_url = importlib.metadata.distribution(DIST_NAME).read_text("direct_url.json")
    if direct_url:  # absent for an install from an index; a local wheel records its file
        info = json.loads(direct_url)
        assert not info.get("dir_info", {}).get("editable", False), info
        assert info["url"].endswith(".whl"), info


@pytest.mark.parametrize("target", ["serve", "serve-auth"])
def test_make_serve_refuses_a_busy_port_before_it_starts_anything(target, tmp_path):
    """A user's second `make serve` while the first still runs: one clear line naming the
    PORT= to use, exit non-zero, no database or auth config made (MLflow's own answer is
    uvicorn's "Address already in use", after its start-up)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(["make", "-o", "install", target, f"VENV={Path(sys.executable).parent.parent}",
                                 f"MLFLOW={mlflow.__version__}", f"PORT={port}",
                                 f"DATABASE_URL=sqlite:///{tmp_path}/mlflow.db", f"AUTH_DIR={tmp_path}/auth"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0
    assert (f"Port {port} on 127.0.0.1 is taken (Address already in use): another server (an earlier make serve?) is "
            f"listening there. Stop it, or start this one on another port: make serve PORT={port + 1}"
            ) in result.stderr.splitlines()  # fmt: skip
    assert "mlflow server" not in result.stdout + result.stderr and not list(tmp_path.iterdir())


SEED_FLOW = textwrap.dedent(
    """
    import json, sys
    import mlflow, mlflow.genai
    import mlflow_prompt_alias_store
    from mlflow_prompt_alias_store import PromptAliasClient

    uri = "prompt-alias+sqlite:///seed.db"
    mlflow.set_tracking_uri(uri)
    mlflow.genai.register_prompt(name="qa", template="Answer: {{q}}")
    mlflow.genai.register_prompt(name="qa", template="Answer briefly: {{q}}")
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    first = mlflow.genai.load_prompt("prompts:/qa@production")
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)
    second = mlflow.genai.load_prompt("prompts:/qa@production")
    mlflow.genai.delete_prompt_alias(name="qa", alias="production")
    try:
        mlflow.genai.load_prompt("prompts:/qa@production")
        gone = None
    except mlflow.exceptions.MlflowException as e:
        gone = e.error_code
    history = [
        [e.action, e.from_version, e.to_version, e.sequence]
        for e in PromptAliasClient(uri).get_alias_history("qa")
    ]
    print(json.dumps({
        "package": mlflow_prompt_alias_store.__file__,
        "prefix": sys.prefix,
        "templates": [first.template, second.template],
        "versions": [first.version, second.version],
        "gone": gone,
        "history": history,
    }))
    """
)


def _stock_code_for_a_deleted_alias(uri: str) -> str:
    """Stock MLflow's error code for loading a deleted alias (it differs between releases)."""
    mlflow.set_tracking_uri(uri)
    mlflow.genai.register_prompt(name="qa", template="Answer: {{q}}")
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    mlflow.genai.delete_prompt_alias(name="qa", alias="production")
    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        mlflow.genai.load_prompt("prompts:/qa@production")
    return e.value.error_code


@pytest.mark.timeout(1200)
def test_wheel_installs_into_a_fresh_venv_and_runs_the_seed_flow(built, tmp_path, stock_sqlite_uri):
    wheel, _, _ = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # The same MLflow as this test run (each release of the range in CI), installed as
    # docs/compatibility.md tells users to, but --no-compile: pip would compile all ~10,000
    # files of the environment (20 s of CPU); the runs below compile what they import (their
    # environment leaves out PYTHONDONTWRITEBYTECODE).
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-compile"]
    wanted = [str(wheel)] + (["sqlalchemy<2.1"] if _compat.mlflow_minor() <= (3, 8) else [])
    install = subprocess.run(pip + wanted + [f"mlflow=={mlflow.__version__}"],
                             capture_output=True, text=True, timeout=1100)  # fmt: skip
    if install.returncode and "mlflow-tracing==" + mlflow.__version__ in install.stderr:
        # A release whose split packages the index lacks (3.18.0, for now): its code over the
        # release before it, as scripts/install-deps does.
        for step in (pip + wanted + [f"mlflow<{mlflow.__version__}"],
                     [str(python), "-m", "pip", "uninstall", "--yes", "--quiet",
                      "mlflow", "mlflow-skinny", "mlflow-tracing"],
                     pip + ["--no-deps", f"mlflow=={mlflow.__version__}"]):  # fmt: skip
            install = subprocess.run(step, capture_output=True, text=True, timeout=1100)
            assert install.returncode == 0, install.stderr[-5000:]
    assert install.returncode == 0, install.stderr[-5000:]

    work = tmp_path / "elsewhere"  # outside the checkout: nothing of it can be imported
    work.mkdir()
    (work / "seed.py").write_text(SEED_FLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))}
    run = subprocess.run([str(python), "seed.py"], cwd=work, capture_output=True, text=True,
                         timeout=300, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-5000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])

    assert Path(result["package"]).resolve().is_relative_to(venv.resolve())
    assert result["templates"] == ["Answer: {{q}}", "Answer briefly: {{q}}"]
    assert result["versions"] == [1, 2]
    assert result["gone"] == _stock_code_for_a_deleted_alias(stock_sqlite_uri)
    assert result["history"] == [["delete", 2, None, 3], ["move", 1, 2, 2], ["set", None, 1, 1]]

    # The console script of the installed wheel reads the same journal.
    cli = subprocess.run(
        [str(venv / "bin" / "mlflow-prompt-alias"), "history", "qa", "--output", "json",
         "--tracking-uri", "prompt-alias+sqlite:///seed.db"],
        cwd=work, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "delete" in cli.stdout and "move" in cli.stdout


# ------------------------------------------------------------------ the import graph

# Which of the package's parts each part may not import (module level or inside functions).
_LAYERS = {
    "_store": {"_server", "_client", "_cli", "_builders"},
    "_client": {"_server", "_cli", "_builders"},
    "_server": {"_client", "_cli", "_builders"},
    "_uri": {"_store", "_server", "_client", "_cli", "_builders"},
    "_entities": {"_store", "_server", "_client", "_cli", "_builders"},
    "_errors": {"_store", "_server", "_client", "_cli", "_builders"},
    "_routes": {"_store", "_server", "_client", "_cli", "_builders"},
    # MLflow's differences: a leaf every part may use, that uses none of them.
    "_compat": {"_store", "_server", "_client", "_cli", "_builders", "_uri", "_entities", "_errors", "_routes"},
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every import statement that can run: anywhere in the module, functions included,
    except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module name -> the package's own modules it imports."""
    package = package_dir.name
    modules = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    # The top-level package resolves public names lazily from a table of module names.
    lazy: dict[str, str] = {}
    init = package_dir / "__init__.py"
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets
        ):
            lazy = ast.literal_eval(node.value)

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        edges = graph.setdefault(name, set())
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = []
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    if candidate in modules:
                        targets.append(candidate)
                    elif base == package and alias.name in lazy:
                        targets.append(lazy[alias.name])
                    else:
                        targets.append(base)
            for target in targets:
                if target.split(".")[0] == package and target in modules and target != name:
                    edges.add(target)
    for name, source in lazy.items():
        graph[package].add(source)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    def part(module: str) -> str:
        return module.split(".")[1] if "." in module else ""

    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if part(target) in _LAYERS.get(part(source), ())
    )


def test_imports_run_one_way_without_cycles():
    graph = import_graph(SOURCE)
    # The walk sees the real structure (so the checks below cannot pass on an empty graph).
    assert "mlflow_prompt_alias_store._store.registry" in graph["mlflow_prompt_alias_store._server.context"]
    assert "mlflow_prompt_alias_store._store.registry" in graph["mlflow_prompt_alias_store._client.client"]
    assert "mlflow_prompt_alias_store._client.rest" in graph["mlflow_prompt_alias_store._client.client"]
    assert find_cycle(graph) is None
    assert layer_violations(graph) == []


def test_import_checks_catch_cycles_and_wrong_way_imports(tmp_path):
    """The checker itself, on a package made to break both rules."""
    pkg = tmp_path / "mlflow_prompt_alias_store"
    for sub in ("_store", "_server"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text('_LAZY = {"X": "mlflow_prompt_alias_store._store.a"}\n')
    (pkg / "_store" / "a.py").write_text(
        "def f():\n    from mlflow_prompt_alias_store._server import b\n"
    )
    (pkg / "_server" / "b.py").write_text("from .._store import a\n")
    graph = import_graph(pkg)
    assert find_cycle(graph) is not None
    assert layer_violations(graph) == [
        ("mlflow_prompt_alias_store._store.a", "mlflow_prompt_alias_store._server.b")
    ]
