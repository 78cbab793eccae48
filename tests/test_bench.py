"""The benchmarks the README quotes still run, each at its smallest, and print the table it is quoted for.

They assert nothing about speed (tests never time things): only that a reader who reruns the README's
command gets a table instead of a traceback, and that a table compares what it says it does.
"""

import importlib.util

from conftest import REPO, run_script
from gpt import BUDGETS


def test_training_benchmark_prints_its_table_and_the_targets(tmp_path):
    result = run_script("bench/train.py", ["--sizes=cpu", "--steps=1", "--warmup=1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| cpu recipe | 0.8M | fp32, SDPA, eager" in result.stdout  # the plain fp32 baseline row
    assert "gpt.py's default here" in result.stdout
    assert "Muon + fused AdamW, memory kept: default with --optimizer=muon" in result.stdout  # what Muon's step costs
    assert "cpu recipe default / fp32 eager tokens/s" in result.stdout  # the targets line


def test_generation_benchmark_prints_its_table(tmp_path):
    result = run_script("bench/generate.py", ["--new_tokens=5", "--repeats=1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| float32 | on |" in result.stdout and "| float32 | off |" in result.stdout


def test_data_benchmark_prints_start_up_times_for_both_tokenizers(tmp_path):
    result = run_script("bench/data.py", ["--sizes=1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| x1 (1 MB) | char |" in result.stdout and "| x1 (1 MB) | gpt2 |" in result.stdout


def test_matmul_benchmark_prints_the_steps_matmul_time_against_the_peak(tmp_path):
    result = run_script("bench/matmuls.py", ["--dtype=float32"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "a baby GPT step's matmuls:" in result.stdout


def test_budget_benchmark_prints_its_table(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text((REPO / "input.txt").read_text()[:100_000])
    args = ["--budgets=0.2", f"--text={text}", "--classic_steps=20"]
    result = run_script("bench/budget.py", args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| classic recipe, its own steps | - |" in result.stdout
    assert "| classic recipe, fitted | 0.2 |" in result.stdout and "| gpt.py --minutes | 0.2 |" in result.stdout


def test_the_budget_benchmarks_classic_recipe_sets_every_knob_a_budget_sets():
    # otherwise --minutes gives the "classic recipe, fitted" rows the budget's optimizer or learning rate too, and
    # they are no longer the classic recipe with only its steps fitted
    spec = importlib.util.spec_from_file_location("budget", REPO / "bench" / "budget.py")
    budget = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(budget)
    classic = {flag[2:].split("=")[0] for flag in budget.CLASSIC}
    assert set().union(*BUDGETS.values()) <= classic
