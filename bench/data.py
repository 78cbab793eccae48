"""Start-up time and memory of gpt.py for bigger inputs: the token cache at work.

    python bench/data.py                 # input.txt x1, x10 and x100 (117 MB), both tokenizers
    python bench/data.py --sizes=1,10

For each size and tokenizer it runs gpt.py twice in a scratch folder: the first start tokenizes the
text and writes the cache beside it, the second start maps the cache. Each run trains one step with
tiny settings, so the time is start-up: reading (or tokenizing) the data, building the model,
evaluating once, saving and printing a one-token sample. Peak memory is the child process's
maximum resident set, from the operating system (os.wait4; Windows has no such call, and shows '-').
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import rss_bytes

REPO = Path(__file__).resolve().parent.parent
ONE_STEP = ["--n_layer=1", "--n_head=1", "--n_embd=16", "--block_size=32", "--batch_size=4", "--max_iters=1",
            "--eval_iters=1", "--sample_interval=0", "--num_samples=1", "--max_new_tokens=1"]  # fmt: skip


def run(folder: Path, tokenizer: str) -> tuple[float, float | None, bool]:
    """Seconds, peak MB (None on Windows), and whether this start tokenized the text."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(REPO / "gpt.py"), *ONE_STEP, f"--tokenizer={tokenizer}"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out = child.stdout.read()
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(child.pid, 0)
        peak_mb = rss_bytes(usage.ru_maxrss) / 2**20  # MiB, as this table has always given them
    else:  # Windows
        status, peak_mb = child.wait(), None
    seconds = time.perf_counter() - start
    if status != 0:
        sys.exit(f"gpt.py failed in {folder}:\n{out}")
    return seconds, peak_mb, "tokenizing" in out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100", help="copies of input.txt to train on")
    args = parser.parse_args()
    text = (REPO / "input.txt").read_bytes()
    print(
        "| input | tokenizer | tokens file | first start (tokenize) | second start (cached) | peak memory 1st / 2nd |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for copies in map(int, args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            (folder / "input.txt").write_bytes(text * copies)
            for tokenizer in ("char", "gpt2"):
                first_s, first_mb, tokenized = run(folder, tokenizer)
                second_s, second_mb, tokenized_again = run(folder, tokenizer)
                assert tokenized and not tokenized_again
                cache_mb = (folder / f"input.txt.{tokenizer}.tokens").stat().st_size / 1e6
                memory = "-" if first_mb is None else f"{first_mb:,.0f} / {second_mb:,.0f} MB"
                print(f"| x{copies} ({len(text) * copies / 1e6:,.0f} MB) | {tokenizer} | {cache_mb:,.1f} MB | "
                      f"{first_s:.1f} s | {second_s:.1f} s | {memory} |")  # fmt: skip


if __name__ == "__main__":
    main()
