"""Every example in README.md and docs/*.md runs as written, in page order.

One test per page (pages without a ``python`` or ``bash`` block are listed in
``NO_EXAMPLES`` and asserted to have none). A page runs in a fresh working directory of its
own (the examples use the relative ``sqlite:///mlflow.db``), top to bottom, as one reader at
one machine would run it:

- ``python`` blocks share one namespace, executed in this process with that directory as cwd.
  MLflow's global state is restored afterwards: tracking and registry URIs, store caches and
  the ``MLFLOW_*`` variables by conftest's ``clean_mlflow_state``, the environment and the cwd
  by ``monkeypatch``; live-alias watches a block left running are stopped.
- ``bash`` blocks run with ``bash -euo pipefail`` in the same directory, with this test
  environment's ``bin/`` first on PATH, so ``mlflow``, ``mlflow-prompt-alias`` and ``python``
  are the installed ones. A page's bash blocks are one shell session: what a block exports,
  the later blocks see, and so do the python blocks after it (a python started from that shell).
- A line that starts a server (``mlflow server …``, ``make serve``, ``make serve-auth``) runs in
  the background, as in a second terminal: the runner starts it, waits (at most 90 s, as
  ``tests/_server.py`` does) until it answers ``/health``, and goes on with the next lines.
  It stops the server (its whole process group, by process id: MLflow forks uvicorn workers
  and job consumers) at the end of the page, failed or not, or when a later server line of
  the page takes the same port (as a reader stops a server with Ctrl-C to start the next).
  Servers bind 127.0.0.1 only.
- ``text`` and ``json`` blocks are output or file contents, never run; a fence of any other
  language fails the test, so that nothing runnable goes unrun.
- Output is not compared (it has times in it); every block must succeed, but for:

EXPECTED ERRORS. A python statement whose line ends with the comment ``# raises
MlflowException`` (optionally followed by ``: why``) must raise ``MlflowException`` (the runner
catches it; a statement that raises nothing, or something else, fails the test). The reader
sees the same comment.

SUBSTITUTIONS, applied to a block's text (or to one command of it) before it runs; nothing
else is changed. What the docs say -> what runs. Why.

1. ``127.0.0.1:5000``, ``--port 5000`` -> a free port, the same for the whole page.
   CI runs two test lanes at once, and 5000 may be taken.
2. ``postgresql://postgres@127.0.0.1:5432/mlflow`` -> a database created empty for the page
   (conftest's ``postgres_databases``, on the server of ``PROMPT_ALIAS_TEST_POSTGRES_URL``),
   dropped at the page's end. The reader's database ``mlflow`` is an empty one they created
   (quickstart.md says so); pages and lanes must not share one.
3. ``[.venv/bin/]python -m benchmarks.NAME ARGS`` -> ``tests/test_benchmarks.py``'s ``_run``:
   ``--quick`` added, this environment's python with ``-P`` and the checkout last on
   ``sys.path``, cwd the checkout; ``postgresql://postgres@127.0.0.1:5432/test`` in ARGS is
   that server's ``test`` database, as test_benchmarks.py gives it. ``_run`` runs one command
   once per session (README.md, benchmarks.md and test_benchmarks.py share some).
   The benchmarks' small size: their figures are for docs/benchmarks.md, not for the tests.
   The installed package: ``python -m`` from the checkout would benchmark its sources.
4. ``make serve``, ``make serve-auth`` -> ``make -o install serve[-auth] VENV=<this environment>
   MLFLOW=<its MLflow> PORT=<the free port> DATABASE_URL=sqlite:///<page dir>/mlflow.db
   AUTH_DIR=<page dir>/.mlflow-auth WORKERS=1``, from the checkout (one worker, as every server
   the tests start where several are not what is tested; so ``mlflow server`` lines without
   ``--workers`` get ``MLFLOW_WORKERS=1`` in the environment, the variable of that option).
   ``install`` would rebuild the wheel from the checkout as it is at that moment and
   force-reinstall it into VENV: into the environment running this very test, which imports
   from it (and an edit of the checkout in progress would land in it). This environment is
   what ``make install`` made before pytest started (``make test`` depends on it), so
   ``-o install`` skips only that prerequisite; the recipe (``mlflow server …``,
   ``scripts/serve-auth``) runs as written. Its files go to the page's directory, not into
   the checkout. The runner checks that the server's uvicorn workers run with
   ``PYTHONSAFEPATH=1`` (the recipe's): ``python -m uvicorn`` from the checkout root would
   otherwise import the checkout's sources, not the wheel.
5. ``make test`` -> not run; asserted to be exactly the command ``.ci/run`` runs on the newest
   MLflow. It is the command running these tests. ``make test-quick`` and ``make coverage``
   -> not run (they run this suite again); asserted to be the Makefile's targets, test-quick
   with the selection README describes.
6. ``pip install ARGS`` -> ``<scratch venv>/bin/pip install ARGS``, cwd the checkout, holding
   the Makefile's build lock, ``build/`` and the egg-info removed afterwards. A reader's pip
   installs into their environment, not into this one: a virtual environment made for the
   test run (``python -m venv``; one for every page: the first page to need it makes it,
   under the lock), with this environment's site-packages after its own on its
   path (a ``.pth`` file), so that what is installed here satisfies the requirements. (Not
   MLflow 3.18.0 itself, while the index lacks its ``mlflow-skinny``/``mlflow-tracing``
   (docs/compatibility.md): pip installs 3.17.2 there, as it does for a reader today.) From
   the checkout, as the docs say; under the lock because setuptools builds in the source
   tree, and CI builds other lanes' wheels from the same checkout at the same time. A
   ``pip install '.[EXTRAS]'`` (or ``.``) once any page installed the checkout there -> ``pip
   install 'mlflow-prompt-alias-store[EXTRAS]'``: the same sources, so the same wheel; what the
   command adds is its extras' dependencies (pip's warning that an extra does not exist fails
   the page). A build takes 7-16 s of CPU; README.md, quickstart.md and auth.md have six
   such commands, and the run builds once.

The docs describe the newest release of the tested range (the Makefile's ``MLFLOW``): on
other releases the test skips.
"""

from __future__ import annotations

import ast
import fcntl
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest
from _server import NO_JOBS, free_port, stop, wait_until_up
from test_benchmarks import _run as run_benchmark

import mlflow
from mlflow.exceptions import MlflowException

ROOT = Path(__file__).parent.parent
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
# Pages with no python or bash block (tables, prose, the layout of the code).
NO_EXAMPLES = {"docs/compatibility.md", "docs/index.md", "docs/uris.md"}
RUN = {"python", "bash"}
SHOWN = {"text", "json"}
NEWEST = re.search(r"^MLFLOW \?= *(\S+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)[1]
# This environment: sys.executable is VENV/bin/python (not resolved: that is the base python).
BIN = Path(sys.executable).parent

PORT = re.compile(r"(?<=127\.0\.0\.1:)5000\b|(?<=--port )5000\b")
DOCS_POSTGRES = "postgresql://postgres@127.0.0.1:5432/mlflow"
BENCHMARK_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
BENCHMARK_MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"
RAISES = re.compile(r"#\s*raises MlflowException\b")
SERVER_TIMEOUT = 90

pytestmark = [
    pytest.mark.release,
    pytest.mark.skipif(
        mlflow.__version__ != NEWEST,
        reason=f"the docs describe the newest release of the tested range, MLflow {NEWEST} "
        f"(the Makefile's MLFLOW); this is {mlflow.__version__}",
    ),
]


@dataclass
class Block:
    lang: str
    text: str
    line: int  # the page's line number of the block's first line

    def where(self, page: str) -> str:
        return f"{page}:{self.line} ({self.lang} block)"


def blocks(page: str) -> list[Block]:
    found, lines = [], (ROOT / page).read_text().splitlines()
    i = 0
    while i < len(lines):
        assert not re.match(r"\s+```", lines[i]), f"{page}:{i + 1}: an indented fence"
        if fence := re.match(r"```(.*)$", lines[i]):
            lang = fence[1].strip()
            assert lang in RUN | SHOWN, (
                f"{page}:{i + 1}: a ```{lang} block: name it python or bash (it runs) or text "
                "or json (it is shown)"
            )
            end = lines.index("```", i + 1)
            found.append(Block(lang, "\n".join(lines[i + 1 : end]) + "\n", i + 2))
            i = end
        i += 1
    return found


def _words(command: str) -> list[str]:
    """A command's words, its comment dropped and shell operators as words of their own."""
    lexer = shlex.shlex(command.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def commands(text: str) -> list[tuple[str, str]]:
    """A bash block as ``(kind, text)`` runs: ``shell`` for consecutive ordinary lines (run as
    one script), else one command the runner handles (``server``, ``make-serve``,
    ``make-test``, ``benchmark``, ``pip``)."""
    lines, found, i = text.splitlines(keepends=True), [], 0
    while i < len(lines):
        start = i
        heredoc = re.search(r"<<-?\s*(['\"]?)(\w+)\1", lines[i])
        while lines[i].rstrip("\n").endswith("\\") and i + 1 < len(lines):
            i += 1
        if heredoc:
            while lines[i].strip() != heredoc[2] and i + 1 < len(lines):
                i += 1
        i += 1
        chunk = "".join(lines[start:i])
        kind = "shell" if heredoc else _kind(chunk)
        if kind == "shell" and found and found[-1][0] == "shell":
            found[-1] = ("shell", found[-1][1] + chunk)
        else:
            found.append((kind, chunk))
    return found


def _kind(command: str) -> str:
    try:
        words = _words(command)
    except ValueError:  # not one command (quotes that do not close on the line): plain shell
        return "shell"
    if words[:2] == ["mlflow", "server"]:
        kind = "server"
    elif words[:1] == ["make"]:
        assert words[1:] in (["serve"], ["serve-auth"], ["test"], ["test-quick"], ["coverage"]), (
            f"a make command the runner does not know: {command}"
        )
        kind = {"test": "make-test", "test-quick": "make-suite", "coverage": "make-suite"}.get(words[1], "make-serve")
    elif len(words) > 2 and re.fullmatch(r"(.*/)?python3?", words[0]) and words[1] == "-m" and words[2].startswith("benchmarks."):
        kind = "benchmark"
    elif words[:2] == ["pip", "install"]:
        kind = "pip"
    else:
        # Anywhere else in a line these would run unchanged: a server in the foreground (the
        # block would never end), a pip install into this environment.
        pairs = set(zip(words, words[1:]))
        assert not pairs & {("mlflow", "server"), ("make", "serve"), ("make", "serve-auth"), ("make", "test"),
                            ("-m", "pip"), ("pip", "install"), ("pip3", "install")}, (
            f"the runner knows this command only at the start of a line: {command}"
        )  # fmt: skip
        return "shell"
    operators = set(words) & {"&&", "||", ";", "|", "&", ">", "<"}
    assert not operators, f"the runner runs {kind} lines as one plain command: {command}"
    return kind


def _raising_lines(block: Block) -> set[int]:
    tokens = tokenize.generate_tokens(io.StringIO(block.text).readline)
    return {t.start[0] + block.line - 1 for t in tokens if t.type == tokenize.COMMENT and RAISES.match(t.string)}


class PageRun:
    """One page's run: its directory, shell environment, python namespace and servers."""

    def __init__(self, page: str, request, monkeypatch, tmp_path: Path):
        self.page, self.request, self.monkeypatch = page, request, monkeypatch
        self.work, self.logs = tmp_path / "work", tmp_path / "logs"
        self.work.mkdir()
        self.logs.mkdir()
        monkeypatch.chdir(self.work)
        self.port = str(free_port())
        # Servers the page starts run without MLflow's job runner (NO_JOBS: some 20 s of CPU per
        # start on a plain database URI, and nothing a page shows; the server tests test it),
        # and with one worker where the command gives no --workers (MLflow's MLFLOW_WORKERS, the
        # default of its --workers: 4 workers import MLflow four times, 2-3 s of CPU each).
        self.shell_env = {**os.environ, **NO_JOBS, "MLFLOW_WORKERS": "1",
                          "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
        self.synced = dict(os.environ)  # the environment as the python blocks last saw it
        self.namespace: dict = {"__name__": "__main__"}
        self.servers: dict[str, subprocess.Popen] = {}  # port -> its server's process
        self.postgres = None  # (postgres_databases, the page's database)
        self.scratch: Path | None = None
        self.count = 0

    # -- text

    def substitute(self, text: str) -> str:
        text = PORT.sub(self.port, text)
        if DOCS_POSTGRES in text:
            if self.postgres is None:
                databases = self.request.getfixturevalue("postgres_databases")
                self.postgres = (databases, databases.create())
            databases, name = self.postgres
            text = text.replace(DOCS_POSTGRES, databases.url(name))
        return text

    # -- blocks

    def run(self, block: Block) -> None:
        text = self.substitute(block.text)
        if block.lang == "python":
            self.python(Block(block.lang, text, block.line))
            return
        for kind, command in commands(text):
            where = block.where(self.page)
            if kind == "shell":
                self.shell(command, where)
            elif kind == "server":
                words = _words(command)
                assert "--port" in words, f"{where}: give the server a --port: {command}"
                port = words[words.index("--port") + 1]
                assert "--host" in words and words[words.index("--host") + 1] == "127.0.0.1", (
                    f"{where}: give the server --host 127.0.0.1: {command}"
                )
                self.start_server("exec " + command, self.work, self.shell_env, port)
            elif kind == "make-serve":
                self.make_serve(_words(command)[1])
            elif kind == "make-test":
                self.make_test(command, where)
            elif kind == "make-suite":
                self.make_suite(command, where)
            elif kind == "benchmark":
                self.benchmark(_words(command))
            elif kind == "pip":
                self.pip_install(_words(command)[2:], where)

    def python(self, block: Block) -> None:
        self.sync_environment()
        filename = str(ROOT / self.page)  # tracebacks show the page's lines
        tree = ast.parse(block.text, filename)
        ast.increment_lineno(tree, block.line - 1)
        raising = _raising_lines(block)
        for statement in tree.body:
            code = compile(ast.Module([statement], type_ignores=[]), filename, "exec")
            lines = set(range(statement.lineno, statement.end_lineno + 1))
            if lines & raising:
                raising -= lines
                try:
                    exec(code, self.namespace)  # noqa: S102
                except MlflowException:
                    pass
                else:
                    pytest.fail(f"{self.page}:{statement.lineno}: raised no MlflowException")
            else:
                exec(code, self.namespace)  # noqa: S102
        assert not raising, f"{self.page}:{sorted(raising)}: '# raises MlflowException' on a line of no statement"

    def sync_environment(self) -> None:
        """Give the python blocks what the bash blocks exported since they last looked."""
        for key, value in self.shell_env.items():
            if self.synced.get(key) != value:
                self.monkeypatch.setenv(key, value)
        for key in self.synced.keys() - self.shell_env.keys():
            self.monkeypatch.delenv(key, raising=False)
        self.synced = dict(self.shell_env)

    def shell(self, script: str, where: str) -> None:
        self.count += 1
        path, exported = self.logs / f"bash-{self.count}.sh", self.logs / f"bash-{self.count}.env"
        # After the block's own lines, what it exported is kept for the next blocks.
        path.write_text(f"{script}\nenv -0 > {shlex.quote(str(exported))}\n")
        result = subprocess.run(["bash", "-euo", "pipefail", str(path)], cwd=self.work, env=self.shell_env,
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, (
            f"{where} exited {result.returncode}:\n{script}\n--- stdout:\n{result.stdout[-3000:]}"
            f"\n--- stderr:\n{result.stderr[-5000:]}"
        )
        env = dict(item.split("=", 1) for item in exported.read_text().split("\0") if item)
        for bash_own in ("_", "SHLVL", "PWD", "OLDPWD"):
            env.pop(bash_own, None)
        self.shell_env = env

    def start_server(self, command: str, cwd: Path, env: dict, port: str) -> None:
        if port in self.servers:  # the reader stops the server on that port first
            stop(self.servers.pop(port))
        self.count += 1
        log_path = self.logs / f"server-{self.count}.log"
        with open(log_path, "wb") as log:
            self.servers[port] = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until_up(self.servers[port], f"http://127.0.0.1:{port}", log_path, timeout=SERVER_TIMEOUT)

    def make_serve(self, target: str) -> None:
        command = ["make", "-o", "install", target, f"VENV={BIN.parent}", f"MLFLOW={mlflow.__version__}",
                   f"PORT={self.port}", f"DATABASE_URL=sqlite:///{self.work}/mlflow.db",
                   f"AUTH_DIR={self.work}/.mlflow-auth", "WORKERS=1"]  # fmt: skip
        self.start_server("exec " + shlex.join(command), ROOT, self.shell_env, self.port)
        # The recipe serves the installed wheel, not the checkout it runs in: its uvicorn
        # workers (`python -m uvicorn`, cwd the checkout) run with PYTHONSAFEPATH set.
        group = os.getpgid(self.servers[self.port].pid)
        workers = [p for p in Path("/proc").glob("[0-9]*") if _in_group(p, group) and b"uvicorn" in _read(p / "cmdline")]
        assert workers, f"{target}: no uvicorn worker in the server's process group"
        for worker in workers:
            assert b"PYTHONSAFEPATH=1" in _read(worker / "environ").split(b"\0"), f"{target}: {worker} runs the checkout"

    def make_test(self, command: str, where: str) -> None:
        ci = (ROOT / ".ci" / "run").read_text()
        assert _words(command) == ["make", "test"], f"{where}: {command}"
        # The newest's job is `make test` as written: no arguments, nothing exported for it.
        assert re.search(r'^\s*newest\) args=\(\) *;;', ci, flags=re.MULTILINE), ".ci/run: the newest's make test has arguments"
        assert re.search(r'^\s*if make test "\$\{args\[@\]\}"', ci, flags=re.MULTILINE), ".ci/run runs no make test"

    def make_suite(self, command: str, where: str) -> None:
        # Other runs of this very suite: not run here (`make test` runs every test they run);
        # the target must be the Makefile's, with the pytest selection the page describes.
        target = _words(command)[1]
        makefile = (ROOT / "Makefile").read_text()
        assert re.search(rf"^{re.escape(target)}: install$", makefile, flags=re.MULTILINE), f"{where}: no target {target}"
        if target == "test-quick":
            quick = re.search(r"^QUICK = (.*)$", makefile, flags=re.MULTILINE)
            assert quick and quick[1] == "not server and not postgres and not mysql and not release", (
                f"{where}: make test-quick is not what README says"
            )

    def benchmark(self, words: list[str]) -> None:
        module, args = words[2], words[3:]
        if BENCHMARK_POSTGRES in args:  # the database server, as tests/test_benchmarks.py gives it
            url = self.request.getfixturevalue("postgres_databases").url("test")
            args = [url if a == BENCHMARK_POSTGRES else a for a in args]
        if BENCHMARK_MYSQL in args:
            url = self.request.getfixturevalue("mysql_databases").url("test")
            args = [url if a == BENCHMARK_MYSQL else a for a in args]
        run_benchmark(module, *args)

    def pip_install(self, args: list[str], where: str) -> None:
        extras = re.fullmatch(r"\.(\[[a-z,]+\])?", args[0]) if len(args) == 1 else None
        with open(ROOT / ".build.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the lock `make wheel` takes (flock(1) is flock(2))
            site = self.scratch_environment()
            built = self.scratch / "checkout-installed"
            if extras and built.exists():  # this checkout is installed there already
                args = [f"mlflow-prompt-alias-store{extras[1] or ''}"]
            try:
                result = subprocess.run([str(self.scratch / "bin" / "pip"), "install", *args], cwd=ROOT,
                                        env=self.shell_env, capture_output=True, text=True, timeout=900)  # fmt: skip
            finally:
                shutil.rmtree(ROOT / "build", ignore_errors=True)
                shutil.rmtree(ROOT / "mlflow_prompt_alias_store.egg-info", ignore_errors=True)
            assert result.returncode == 0, f"{where}: pip install {shlex.join(args)}:\n{result.stderr[-5000:]}"
            assert "does not provide the extra" not in result.stderr, f"{where}: {result.stderr[-2000:]}"
            assert (site / "mlflow_prompt_alias_store").is_dir(), f"{where}: the package is not in {site}"
            if extras:
                built.touch()

    def scratch_environment(self) -> Path:
        """The reader's environment for ``pip install``: a virtual environment that sees this
        one's packages (after its own), so that only what is missing there is installed. One
        for the whole test run, every page's (under the build lock, which the caller holds)."""
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        self.scratch = _run_directory(self.request) / "scratch-venv"
        site = self.scratch / "lib" / version / "site-packages"
        if not (site / "test-environment.pth").exists():
            shutil.rmtree(self.scratch, ignore_errors=True)  # a creation that did not finish
            subprocess.run([sys.executable, "-m", "venv", str(self.scratch)], check=True, timeout=300)
            (site / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        return site

    # -- the end

    def close(self) -> None:
        from mlflow_prompt_alias_store import _compat
        from mlflow_prompt_alias_store._client.watch import AliasWatch

        try:
            for handle in list(_compat._live_handles):  # enable_live_aliases() handles
                handle.stop()
            for value in self.namespace.values():
                if isinstance(value, AliasWatch):
                    value.stop()
        finally:
            try:
                while self.servers:
                    stop(self.servers.popitem()[1])
            finally:
                if self.postgres is not None:
                    databases, name = self.postgres
                    databases.drop(name)


def _run_directory(request) -> Path:
    """The test run's temporary directory, which pytest-xdist's workers share (each has its
    own ``basetemp`` below it; pytest keeps the last three runs')."""
    basetemp = request.getfixturevalue("tmp_path_factory").getbasetemp()
    return basetemp.parent if hasattr(request.config, "workerinput") else basetemp


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process has gone
        return b""


def _in_group(process: Path, group: int) -> bool:
    try:
        return os.getpgid(int(process.name)) == group
    except OSError:
        return False


def _marks(page: str) -> list:
    text = "".join(b.text for b in blocks(page) if b.lang in RUN)
    marks = [pytest.mark.postgres] if DOCS_POSTGRES in text or BENCHMARK_POSTGRES in text else []
    marks += [pytest.mark.mysql] if BENCHMARK_MYSQL in text else []
    if re.search(r"^\s*(mlflow server|make serve)", text, flags=re.MULTILINE):
        marks.append(pytest.mark.server)
    return marks


# A page starts servers and runs benchmark commands (up to 600 s each, test_benchmarks.py's
# bound): more than pyproject's 600 s per test under CI's two lanes.
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("page", [pytest.param(p, marks=_marks(p), id=p) for p in PAGES])
def test_examples_run_as_written(page, request, monkeypatch, tmp_path):
    runnable = [b for b in blocks(page) if b.lang in RUN]
    if page in NO_EXAMPLES:
        assert not runnable, f"{page} has examples now: take it out of NO_EXAMPLES"
        return
    assert runnable, f"{page} has no python or bash block: add it to NO_EXAMPLES"
    run = PageRun(page, request, monkeypatch, tmp_path)
    try:
        for block in runnable:
            started = time.monotonic()
            run.run(block)
            print(f"{block.where(page)}: {time.monotonic() - started:.1f} s")  # shown on failure, or with -rP
    finally:
        run.close()
