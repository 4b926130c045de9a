"""The package layout holds: no import cycle (tools/import_cycles.py), and the checker sees one."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run(root):
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_cycles.py"), str(root)],
        capture_output=True, text=True, timeout=60,
    )


def test_apiexec_has_no_import_cycle():
    result = run(ROOT)
    assert result.returncode == 0, result.stdout
    assert "import cycles: 0" in result.stdout


def test_the_checker_finds_a_cycle(tmp_path):
    package = tmp_path / "apiexec"
    (package / "a").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("")
    (package / "a" / "one.py").write_text("from apiexec.a.two import x\ny = 1\n")
    (package / "a" / "two.py").write_text("from apiexec.a.one import y\nx = 1\n")
    (package / "lazy.py").write_text("def f():\n    import apiexec.a.one\n")
    result = run(tmp_path)
    assert result.returncode == 1
    assert "apiexec.a.one -> apiexec.a.two -> apiexec.a.one" in result.stdout
