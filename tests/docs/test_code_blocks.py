"""Every code block of README.md and docs/**/*.md runs, so no sample can rot.

* ``python`` blocks of one page run in order in one namespace, as a reader
  pasting them into one session would (a page's first block sets up what
  the later ones use). A block that raises fails the page's test, naming the
  file and line. The pages start their own mock server, so nothing here
  needs a key.
* ``bash`` (``sh``, ``shell``, ``console``) blocks: every ``apiexec`` command (also after ``&&``) runs in a
  scratch directory holding a copy of ``examples/``. ``apiexec run`` gets
  ``--mock`` unless it has it (or ``--base-url``), and an input file the
  command names but the scratch directory lacks is made from
  ``examples/chat.jsonl`` (``examples/anthropic_batch.jsonl`` when its name
  says anthropic), so ``apiexec run requests.jsonl ...`` works as written.
  ``apiexec mock-server`` must print its URL and stop with 0 on SIGTERM
  (``--port`` becomes 0: parallel test runs cannot clash). Other commands
  (``pip``, ``pytest``, ``gunicorn``) are the reader's, not run here.
* Other languages (json, text, diagrams) are not code.
* Nothing may leave the machine: host names other than loopback fail to
  resolve while the blocks run, so a sample that would call a real API
  fails here instead of calling it.

Mark a fragment with ``<!-- docs-test: skip REASON -->`` on the line before
its fence (see :mod:`tests.docs.markdown_blocks`). A block that only
includes a file (``--8<-- "examples/..."``, rendered by mkdocs' snippets
extension) shows that file; the file's own tests run it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apiexec.execution.executor import Executor
from apiexec.http import Endpoint
from apiexec.http.presets import PRESETS
from apiexec.mock.server import MockServer
from tests.docs.markdown_blocks import CodeBlock, code_blocks

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", b"127.0.0.1", b"localhost", b"::1"})
SHELLS = ("bash", "sh", "shell", "console")
RUNNABLE = ("python", "py", *SHELLS)
_SHELL_OPERATORS = frozenset({"&&", "||", ";", "&", "|"})
_REDIRECTS = frozenset({">", ">>", "<", "2>", "&>"})
COMMAND_TIMEOUT = 60.0
MOCK_SERVER_START = 20.0


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _pages_with(lang: tuple[str, ...]) -> list[Path]:
    return [page for page in PAGES if any(block.lang in lang for block in code_blocks(page.read_text()))]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only loopback names resolve: a block that would reach the internet fails."""
    real = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOOPBACK:
            raise socket.gaierror(f"docs tests never leave the machine: {host!r} is not loopback")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with examples/ copied in, and placeholder keys set.

    The keys let a sample build ``Endpoint.for_provider("openai")`` as a
    reader with ``$OPENAI_API_KEY`` would; they can reach nothing (offline).
    """
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    for preset in PRESETS.values():
        if preset.api_key_env:
            monkeypatch.setenv(preset.api_key_env, "sk-docs-test-placeholder")
    return tmp_path


# -- python blocks ------------------------------------------------------------------------


def _close_everything(namespace: dict[str, Any]) -> None:
    """Stop what a page left running (executors first: they may use a server)."""
    values = list(namespace.values())
    for value in values:
        if isinstance(value, Executor):
            value.shutdown(wait=True)
    for value in values:
        if isinstance(value, Endpoint):
            value.close()
    for value in values:
        if isinstance(value, MockServer):
            value.stop()


_SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"$')


def _included_files(block: CodeBlock) -> list[Path]:
    """The files a block includes whole (``--8<-- "path"``); [] for code.

    Such a block shows a file of ``examples/`` as it is; the file's own
    tests run it, so the page cannot drift from the code.
    """
    lines = [line.strip() for line in block.code.splitlines() if line.strip()]
    found = [_SNIPPET.match(line) for line in lines]
    if not lines or not all(found):
        return []
    return [ROOT / match["path"] for match in found if match]


def test_included_files_exist() -> None:
    for page in PAGES:
        for block in code_blocks(page.read_text()):
            for path in _included_files(block):
                assert path.is_file(), f"{_page_id(page)}:{block.line} includes {path}, which does not exist"


@pytest.mark.integration
@pytest.mark.parametrize("page", _pages_with(("python", "py")), ids=_page_id)
def test_python_blocks_run_in_order(page: Path, scratch: Path, offline: None) -> None:
    blocks = [block for block in code_blocks(page.read_text()) if block.lang in ("python", "py")]
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    threads_before = set(threading.enumerate())
    path_before = list(sys.path)
    try:
        for block in blocks:
            if block.skip or _included_files(block):
                continue
            code = compile(block.code, f"{_page_id(page)}:{block.line}", "exec")
            try:
                exec(code, namespace)  # noqa: S102 - the docs' own samples
            except BaseException as exc:
                pytest.fail(f"{_page_id(page)}, block at line {block.line}: {type(exc).__name__}: {exc}")
    finally:
        _close_everything(namespace)
        sys.path[:] = path_before  # a page may import from examples/ (its scratch copy)
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(scratch)):
                del sys.modules[name]
    leftover = [t for t in set(threading.enumerate()) - threads_before if t.is_alive() and not t.daemon]
    assert not leftover, f"{_page_id(page)} left threads running: {leftover}"


# -- bash blocks --------------------------------------------------------------------------


def apiexec_commands(block: CodeBlock) -> list[list[str]]:
    """The ``apiexec`` commands of a bash block, as argument lists.

    Example:
        >>> apiexec_commands(CodeBlock("bash", "pip install -e . && apiexec run a.jsonl \\\\\\n  -o b.jsonl  # go\\n", 1))
        [['apiexec', 'run', 'a.jsonl', '-o', 'b.jsonl']]
        >>> apiexec_commands(CodeBlock("bash", "apiexec mock-server --port 8000 &\\ncat x | apiexec run - -o y > log\\n", 1))
        [['apiexec', 'mock-server', '--port', '8000'], ['apiexec', 'run', '-', '-o', 'y']]
    """
    commands = []
    logical = re.sub(r"\\\n\s*", " ", block.code)
    for line in logical.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for word in [*lexer, ";"]:
            if word in _SHELL_OPERATORS:  # the end of one command ("&": run in the background)
                if words[:1] == ["apiexec"]:
                    commands.append(words)
                words = []
            elif not (words and words[-1] in _REDIRECTS):
                words.append(word)
            else:
                words.pop()  # a redirection and its target are the shell's, not apiexec's
    return commands


def _prepare_run(args: list[str], cwd: Path) -> list[str]:
    """``--mock`` unless the command names a server; a missing input file made from the examples."""
    if "--help" in args or "-h" in args:
        return args
    if "--mock" not in args and not any(a.startswith("--base-url") for a in args):
        args = [*args, "--mock"]
    positional = [a for a in args[2:] if not a.startswith("-")]
    source = positional[0] if positional else None
    if source and source != "-" and not (cwd / source).exists():
        example = "anthropic_batch.jsonl" if "anthropic" in source else "chat.jsonl"
        (cwd / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cwd / "examples" / example, cwd / source)
    return args


def _python_m(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "apiexec", *args[1:]]


def _run_mock_server(args: list[str], cwd: Path, where: str) -> None:
    words = list(args)
    if "--port" in words:
        words[words.index("--port") + 1] = "0"
    else:
        words += ["--port", "0"]
    process = subprocess.Popen(
        _python_m(words), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        seen: list[str] = []
        timer = threading.Timer(MOCK_SERVER_START, process.kill)  # never block on a silent server
        timer.start()
        try:
            for line in process.stdout or ():
                seen.append(line)
                if "listening on http://127.0.0.1:" in line:
                    break
        finally:
            timer.cancel()
        assert any("listening on" in line for line in seen), f"{where}: no URL printed: {''.join(seen)[-500:]}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(COMMAND_TIMEOUT) == 0, f"{where}: mock-server did not exit 0 on SIGTERM"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def _bash_cases() -> Iterator[Any]:
    for page in PAGES:
        for block in code_blocks(page.read_text()):
            if block.lang not in SHELLS:
                continue
            where = f"{_page_id(page)}:{block.line}"
            marks = [pytest.mark.skip(reason=block.skip)] if block.skip else []
            for n, command in enumerate(apiexec_commands(block)):
                yield pytest.param(command, where, id=f"{where}#{n}", marks=marks)


@pytest.mark.integration
@pytest.mark.parametrize(("command", "where"), list(_bash_cases()))
def test_apiexec_commands_succeed(command: list[str], where: str, scratch: Path) -> None:
    if command[1:2] == ["mock-server"]:
        _run_mock_server(command, scratch, where)
        return
    if command[1:2] == ["run"]:
        command = _prepare_run(command, scratch)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        _python_m(command), cwd=scratch, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env
    )
    assert done.returncode == 0, f"{where}: {shlex.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}"


def test_every_page_parses_and_every_skip_has_a_reason() -> None:
    runnable = 0
    for page in PAGES:
        for block in code_blocks(page.read_text()):  # raises on a bad directive
            runnable += block.lang in RUNNABLE and not block.skip
    assert runnable >= 20, f"only {runnable} runnable blocks found: is the parser broken?"
