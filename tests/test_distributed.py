"""torchrun with 2 CPU processes (gloo) trains the same model a single process does with the same global batch."""

import subprocess
import sys
from pathlib import Path

from conftest import REPO, TINY, copy_of, run_script, train_log

ARGS = [*TINY, "--max_iters=30", "--eval_interval=10", "--grad_accum_steps=2", "--dtype=float32", "--max_new_tokens=20"]


def val_losses(folder: Path) -> list[float]:
    return [float(row["val_loss"]) for row in train_log(folder)]


def run_torchrun(args: list[str], cwd: Path, port: int) -> subprocess.CompletedProcess:
    """gpt.py in 2 CPU processes under torchrun, as `torchrun --nproc_per_node=2 gpt.py ...`."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    return subprocess.run(
        [*torchrun, str(REPO / "gpt.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_two_processes_follow_the_loss_curve_of_one_with_the_same_global_batch(shakespeare):
    single = copy_of(shakespeare, "single")
    assert run_script("gpt.py", ARGS, single).returncode == 0
    result = run_torchrun(ARGS, shakespeare, port=29517)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("--- sample 1 of 2 ---") == 1  # only rank 0 prints
    assert result.stdout.count("step 30: train loss") == 1
    # the same batches, split across processes: equal up to the order gradients are summed in
    distributed, one = val_losses(shakespeare), val_losses(single)
    assert len(distributed) == len(one) == 4
    assert all(abs(a - b) < 2e-3 for a, b in zip(distributed, one)), (distributed, one)
    assert one[-1] < one[0] - 0.5  # and both really trained


def test_torchrun_with_the_default_settings_rounds_accumulation_up_and_trains(shakespeare):
    args = [*TINY, "--max_iters=4", "--eval_interval=2", "--max_new_tokens=5"]
    result = run_torchrun(args, shakespeare, port=29518)
    assert result.returncode == 0, result.stderr
    assert "2 processes: grad_accum_steps raised from 1 to 2" in result.stdout
    assert len(val_losses(shakespeare)) == 3
