"""bigram.py, the baseline: its trained loss lands on the floor that counting gives; bad input gets one line."""

import math
import re
from collections import Counter

import pytest

from conftest import run_script


@pytest.mark.smoke
def test_trained_bigram_lands_within_005_of_the_count_table_floor(shakespeare):
    result = run_script("bigram.py", ["--max_new_tokens=50"], shakespeare)
    assert result.returncode == 0, result.stderr
    trained, floor = map(
        float, re.search(r"trained bigram val loss ([\d.]+), count-table floor ([\d.]+)", result.stdout).groups()
    )
    assert abs(trained - floor) < 0.05


def test_count_table_floor_matches_counting_pairs_by_hand(shakespeare):
    text = (shakespeare / "input.txt").read_text(encoding="utf-8")
    split = int(0.9 * len(text))
    train, val = text[:split], text[split:]
    vocab = sorted(set(text))
    pairs = Counter(zip(train, train[1:]))
    firsts = Counter(train[:-1])
    # add-one smoothing: every pair counts once more than it was seen
    loss = -sum(math.log((pairs[a, b] + 1) / (firsts[a] + len(vocab))) for a, b in zip(val, val[1:])) / (len(val) - 1)
    result = run_script("bigram.py", ["--max_iters=0", "--max_new_tokens=1"], shakespeare)
    floor = float(re.search(r"count table \(no training\): val loss ([\d.]+)", result.stdout).group(1))
    assert abs(floor - loss) < 1e-4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eval_interval=0"], "--eval_interval must be at least 1, not 0"),
        (["--batch_size=0"], "--batch_size must be at least 1, not 0"),
        (["--n_layer=4"], "unknown setting '--n_layer=4'"),
        (["--input_file=missing.txt"], "cannot read 'missing.txt'"),
    ],
)
def test_bad_input_gets_one_line_as_in_gpt_py(shakespeare, args, message):
    result = run_script("bigram.py", args, shakespeare)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
