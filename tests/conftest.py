"""Shared helpers: run gpt.py the way a user does, in a scratch folder, with small settings.

Every run of gpt.py here gets --device=cpu unless the test names a device itself, because the tests assert what
gpt.py does on a CPU and its 'auto' would pick a Mac's GPU (mps) or a CUDA GPU with CUDA_DEFAULTS' bigger model."""

import csv
import functools
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # so tests can `import gpt`

# settings small enough that a whole training run takes a few seconds on 2 CPU cores
TINY = [
    "--n_layer=2",
    "--n_head=2",
    "--n_embd=32",
    "--block_size=32",
    "--batch_size=8",
    "--eval_iters=4",
    "--warmup_iters=10",
    "--learning_rate=1e-2",
    "--min_lr=1e-3",
]


def on_the_cpu(args: list[str]) -> list[str]:
    """gpt.py's args with --device=cpu added, unless they name a device themselves (--device=auto for the choice)."""
    return list(args) if any(arg.split("=")[0] == "--device" for arg in args) else [*args, "--device=cpu"]


def patched_gpt(patch: str) -> str:
    """Python source that runs patch (code that makes torch or this machine look different), then gpt.py as
    `python gpt.py` would: gpt.py reads its arguments from sys.argv (on the CPU, as on_the_cpu says)."""
    return (
        "import runpy\nimport sys\n"
        'if not any(arg.split("=")[0] == "--device" for arg in sys.argv[1:]):\n'
        '    sys.argv.append("--device=cpu")\n'
        f"{patch}\nrunpy.run_path({str(REPO / 'gpt.py')!r}, run_name='__main__')\n"
    )


REFERENCE_SECONDS = 0.03  # workload_seconds() on a typical 2-core machine, idle


def workload_seconds() -> float:
    """Seconds this machine takes right now for 50 training steps of a small MLP on the CPU, with torch's default
    threads (the median of three timings): many small operations, like the tests' tiny gpt.py runs. A busy machine,
    whose threads wait for each other, takes several times as long as an idle one."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    optimizer = torch.optim.AdamW(model.parameters())
    x = torch.randn(64, 64)

    def steps(n: int) -> None:
        for _ in range(n):
            model(x).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()

    steps(5)  # the first steps allocate and start threads
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        steps(50)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


@functools.cache
def patience_factor() -> float:
    """How many times longer than a typical 2-core machine this one needs: GPT_TEST_PATIENCE if it is set, else
    workload_seconds() against REFERENCE_SECONDS (what a typical 2-core machine takes, idle), never below 1."""
    override = os.environ.get("GPT_TEST_PATIENCE")
    if override is None:
        return max(1.0, workload_seconds() / REFERENCE_SECONDS)
    try:
        factor = float(override)
    except ValueError:
        factor = float("nan")
    if not 0 < factor < float("inf"):
        pytest.exit(f"GPT_TEST_PATIENCE must be a positive number, not {override!r}", pytest.ExitCode.USAGE_ERROR)
    return factor


@pytest.fixture(scope="session", autouse=True)
def measure_patience_first() -> None:
    """patience_factor(), measured once per session before the first test, so that no test's own processes are
    running while it is timed."""
    patience_factor()


def patience(seconds: float) -> float:
    """A timeout that catches a hang, given as what a typical 2-core machine needs: seconds times patience_factor(),
    so that a slow or busy machine waits proportionally longer before calling a run hung."""
    return seconds * patience_factor()


def run_script(script: str, args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python <script> <args>` in cwd and return what it printed and its exit code; gpt.py on the CPU
    (bigram.py and app.py always run there, and take no --device). It may take patience(timeout) seconds."""
    if script == "gpt.py":
        args = on_the_cpu(args)
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=patience(timeout),
    )


def start_gpt(args: list[str], cwd: Path) -> subprocess.Popen:
    """gpt.py in the background (on the CPU), its output unbuffered so the test can follow it line by line."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "gpt.py"), *on_the_cpu(args)],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ctrl_c(args: list[str], cwd: Path, after: str = "step 0:") -> tuple[str, str]:
    """Run gpt.py and press Ctrl-C once it has printed a line starting with after; returns its output, once it
    has stopped as Ctrl-C promises (exit code 130)."""
    process = start_gpt(args, cwd)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(after):
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=patience(120))
    assert process.returncode == 130, "".join(seen) + out + err
    return "".join(seen) + out, err


def train_log(folder: Path) -> list[dict]:
    """The rows of a run's train_log.csv, without the wall-clock column (which differs run to run)."""
    with open(folder / "train_log.csv") as f:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(f)]


def copy_of(folder: Path, name: str) -> Path:
    """A new folder beside folder holding the same input.txt: to run gpt.py twice side by side."""
    other = folder.parent / name
    other.mkdir()
    (other / "input.txt").write_bytes((folder / "input.txt").read_bytes())
    return other


def write_shakespeare(folder: Path, chars: int = 100_000) -> Path:
    """folder (made if needed) holding input.txt: the first chars characters of the repository's text."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "input.txt").write_text((REPO / "input.txt").read_text(encoding="utf-8")[:chars], encoding="utf-8")
    return folder


@pytest.fixture
def shakespeare(tmp_path: Path) -> Path:
    """A scratch folder holding input.txt: the first 100,000 characters of the repository's text."""
    return write_shakespeare(tmp_path)


def gpt2_tokenizer_or_skip() -> None:
    """GPT-2's BPE files are downloaded once by tiktoken; offline, only a cache has them."""
    import tiktoken

    try:
        tiktoken.get_encoding("gpt2")
    except Exception as e:
        if os.environ.get("CI") == "true":
            raise  # CI points TIKTOKEN_CACHE_DIR at the files, so this must work there
        pytest.skip(f"GPT-2 tokenizer files unavailable ({type(e).__name__}): set TIKTOKEN_CACHE_DIR")


QUICK = [*TINY, "--max_iters=20", "--eval_interval=10", "--max_new_tokens=1"]


def snapshot(folder: Path) -> dict:
    """Every file in folder, by name, but for the lock a training run holds there (it names the process that last
    held it)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.is_symlink() and p.name != ".gpt.lock"
    }


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """A folder where gpt.py has trained a tiny model for 20 steps: its model, resume state, log and plot."""
    folder = write_shakespeare(tmp_path / "run")
    assert run_script("gpt.py", QUICK, folder).returncode == 0
    return folder
