"""The best model for the minutes you have: `python gpt.py --minutes=N` against the classic CPU recipe, side by side.

    python bench/budget.py                   # budgets of 1, 2 and 5 minutes (about 20 minutes in all)
    python bench/budget.py --budgets=1       # one budget
    python bench/budget.py --text=my.txt     # on another text

For each budget, whole processes run one after another in fresh folders holding the text, and each row gives the
wall time from start to saved model and samples, and the best val loss the run printed:

- `--minutes=N`: gpt.py's shape for that budget (BUDGETS in gpt.py), its steps fitted to the budget;
- the classic recipe fitted to N minutes: nanoGPT's CPU settings (4 layers x 128, 4 heads, context 64, batch 12,
  learning rate 1e-3 to 1e-4, no dropout) with AdamW, given as flags, with --minutes=N fitting its steps;
- the classic recipe as published: the same settings for its fixed 2,000 steps, once, as the reference.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# every knob BUDGETS sets, so that --minutes fits only the recipe's steps (AdamW and weight decay 1.0 are gpt.py's)
CLASSIC = ["--n_layer=4", "--n_head=4", "--n_embd=128", "--block_size=64", "--batch_size=12",
           "--learning_rate=1e-3", "--min_lr=1e-4", "--dropout=0.0", "--optimizer=adamw",
           "--weight_decay=1.0"]  # fmt: skip
QUIET = ["--num_samples=1", "--max_new_tokens=200"]  # the same closing sample for every row


def run(args: list[str], text: Path) -> tuple[float, float]:
    """Wall seconds and best val loss of `python gpt.py args`, in a fresh folder holding text as input.txt."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(text, Path(folder) / "input.txt")
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(REPO / "gpt.py"), *args, *QUIET], cwd=folder,
                                capture_output=True, text=True)  # fmt: skip
        seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"python gpt.py {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    fitted = re.search(r"fitted to .*", result.stdout)
    print(f"  python gpt.py {' '.join(args)}: {seconds:.1f} s" + (f" ({fitted[0]})" if fitted else ""), flush=True)
    return seconds, float(re.search(r"best val loss ([\d.]+)", result.stdout)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="1,2,5", help="minutes, comma-separated")
    parser.add_argument("--text", default=str(REPO / "input.txt"))
    parser.add_argument("--classic_steps", type=int, default=2000)
    args = parser.parse_args()
    text = Path(args.text).resolve()
    classic_steps = ["--max_iters=" + str(args.classic_steps), f"--eval_interval={max(1, args.classic_steps // 10)}"]
    rows = [("classic recipe, its own steps", "-", *run([*CLASSIC, *classic_steps], text))]
    for minutes in [float(m) for m in args.budgets.split(",")]:
        budget = f"--minutes={minutes:g}"
        rows.append(("classic recipe, fitted", f"{minutes:g}", *run([*CLASSIC, budget], text)))
        rows.append(("gpt.py --minutes", f"{minutes:g}", *run([budget], text)))
    reference = rows[0][3]
    print(f"\n{text.name}, whole processes, one at a time")
    print("| run | budget, minutes | wall time, s | best val loss | against the classic recipe's own |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, minutes, seconds, loss in rows:
        print(f"| {name} | {minutes} | {seconds:.1f} | {loss:.4f} | {loss - reference:+.4f} |")


if __name__ == "__main__":
    main()
