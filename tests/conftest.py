"""Shared helpers: run gpt.py the way a user does, in a scratch folder, with small settings."""

import os
import subprocess
import sys
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


def run_script(script: str, args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python <script> <args>` in cwd and return what it printed and its exit code."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def shakespeare(tmp_path: Path) -> Path:
    """A scratch folder holding input.txt: the first 100,000 characters of the repository's text."""
    text = (REPO / "input.txt").read_text(encoding="utf-8")[:100_000]
    (tmp_path / "input.txt").write_text(text, encoding="utf-8")
    return tmp_path


def gpt2_tokenizer_or_skip() -> None:
    """GPT-2's BPE files are downloaded once by tiktoken; offline, only a cache has them."""
    import tiktoken

    try:
        tiktoken.get_encoding("gpt2")
    except Exception as e:
        if os.environ.get("CI") == "true":
            raise  # CI points TIKTOKEN_CACHE_DIR at the files, so this must work there
        pytest.skip(f"GPT-2 tokenizer files unavailable ({type(e).__name__}): set TIKTOKEN_CACHE_DIR")
