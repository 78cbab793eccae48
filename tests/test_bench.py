"""The benchmarks the README quotes still run, each at its smallest, and print the table it is quoted for.

They assert nothing about speed (tests never time things): only that a reader who reruns the README's
command gets a table instead of a traceback, and that a table compares what it says it does. bench/check.py, the
self-check a user runs before a bug report, must find everything ok on this CPU; and the questions the scripts ask
the operating system (peak memory, the CPU's name) are answered as macOS and Windows answer them.
"""

import importlib
import importlib.util
import subprocess
import sys
import types

import pytest

from conftest import REPO, patience_factor, run_script
from gpt import BUDGETS

CHECKS = ["train", "stop and resume, bit for bit", "sample", "fp16 with a gradient scaler", "torchrun, 2 processes",
          "speed"]  # fmt: skip


def import_bench(name: str, monkeypatch) -> types.ModuleType:
    """bench/<name>.py imported afresh, as its script runs (bench/ on the path), together with bench/machine.py."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    for module in dict.fromkeys(["machine", name]):
        monkeypatch.setitem(sys.modules, module, None)  # noted, so that after the test the earlier module is back
        del sys.modules[module]  # and imported anew now
    return importlib.import_module(name)


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
    budget = f"{0.5 * patience_factor():.2g}"  # half a minute, or what buys as many steps on a slower machine
    args = [f"--budgets={budget}", f"--text={text}", "--classic_steps=20"]
    result = run_script("bench/budget.py", args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| classic recipe, its own steps | - |" in result.stdout
    assert f"| classic recipe, fitted | {budget} |" in result.stdout
    assert f"| gpt.py --minutes | {budget} |" in result.stdout


def test_the_budget_benchmarks_classic_recipe_sets_every_knob_a_budget_sets():
    # otherwise --minutes gives the "classic recipe, fitted" rows the budget's optimizer or learning rate too, and
    # they are no longer the classic recipe with only its steps fitted
    spec = importlib.util.spec_from_file_location("budget", REPO / "bench" / "budget.py")
    budget = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(budget)
    classic = {flag[2:].split("=")[0] for flag in budget.CLASSIC}
    assert set().union(*BUDGETS.values()) <= classic


def test_the_self_check_trains_resumes_bit_for_bit_samples_and_runs_torchrun_on_a_cpu(tmp_path):
    result = run_script("bench/check.py", ["--device=cpu", "--quick"], tmp_path, timeout=900)
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if line.startswith("| ") and cells[0] not in ("check", "---"):
            rows[cells[0]] = cells[1]
    assert list(rows) == CHECKS, result.stdout + result.stderr
    ok = ("train", "stop and resume, bit for bit", "sample", "torchrun, 2 processes")
    assert {name: rows[name] for name in ok} == dict.fromkeys(ok, "ok"), result.stdout
    assert result.returncode == 0, result.stdout  # and fp16 and speed ok too, or fp16 skipped where gpt.py takes none
    assert "- CPU: " in result.stdout and "gpt.py picks cpu, " in result.stdout  # the machine, above the table


@pytest.mark.parametrize("platform, ru_maxrss", [("darwin", 512_000_000), ("linux", 500_000)])
def test_peak_memory_reads_ru_maxrss_as_bytes_on_macos_and_as_kib_on_linux(monkeypatch, platform, ru_maxrss):
    resource = pytest.importorskip("resource")
    train = import_bench("train", monkeypatch)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=ru_maxrss))
    assert train.peak_rss_mb() == 512.0  # MB of 10^6 bytes: 512,000,000 bytes, or 500,000 KiB


def test_the_training_benchmark_imports_without_resource_and_shows_peak_memory_as_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "resource", None)  # as on Windows: `import resource` raises ImportError
    train = import_bench("train", monkeypatch)
    assert train.peak_rss_mb() is None
    assert train.mb(train.peak_rss_mb()) == "-"


def test_the_cpu_name_comes_from_sysctl_on_macos(monkeypatch):
    machine = import_bench("machine", monkeypatch)
    monkeypatch.setattr(sys, "platform", "darwin")
    asked = []

    def sysctl(command, **options):
        asked.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="Apple M2 Pro\n", stderr="")

    monkeypatch.setattr(machine.subprocess, "run", sysctl)
    assert machine.cpu_name() == "Apple M2 Pro"
    assert asked == [["sysctl", "-n", "machdep.cpu.brand_string"]]


def test_step_benchmark_prints_what_the_fused_average_and_fewer_loss_reads_save(tmp_path):
    result = run_script("bench/step.py", ["--device=cpu", "--steps=2", "--repeats=1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| the weight average (" in result.stdout
    assert "| a whole training step | loss read every step vs every 10 |" in result.stdout
