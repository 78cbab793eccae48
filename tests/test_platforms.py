"""The tests themselves work on every platform a user has: where a module only Unix has is missing (as on
Windows), the tests that need it skip and say why, and every other test is still collected and runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, patience

UNIX_ONLY = ("fcntl", "pty", "termios", "resource")

# Run at start-up by every Python process that has its folder on PYTHONPATH: the Unix-only modules become
# unimportable (None in sys.modules makes `import fcntl` raise ModuleNotFoundError, as on Windows), then any
# sitecustomize this one hides (a virtual environment's, a distribution's) still runs.
SITECUSTOMIZE = f"""\
import importlib.machinery
import importlib.util
import os
import sys

for name in {UNIX_ONLY!r}:
    sys.modules[name] = None

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != here]
)
if spec is not None:
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
"""


def without_unix_only_modules(tmp_path: Path) -> dict:
    """An environment in which Python starts as if on Windows, as far as the Unix-only modules go."""
    folder = tmp_path / "like_windows"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # the tests folder stays importable (conftest, test_app), as pytest makes it for the tests it collects
    path = [str(folder), str(REPO / "tests"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def collected(env: dict) -> int:
    """How many tests `python -m pytest --collect-only` finds in tests/ under env; fails on a collection error."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=patience(300))  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "error" not in summary.lower(), summary
    count = re.fullmatch(r"(\d+) tests? collected in [\d.]+s", summary)
    assert count, summary
    return int(count.group(1))


def test_without_fcntl_pty_termios_and_resource_as_on_windows_every_test_is_still_collected(tmp_path):
    env = without_unix_only_modules(tmp_path)
    for name in UNIX_ONLY:  # the stand-in really takes effect
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, (name, probe.stderr)
    # the tests that need one of them are collected too, and skip when run, saying why
    assert collected(env) == collected(os.environ) > 200
