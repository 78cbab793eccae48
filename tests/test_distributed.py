"""torchrun with 2 CPU processes (gloo) trains the same model a single process does with the same global batch."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY, copy_of, on_the_cpu, patched_gpt, patience, run_script, train_log

ARGS = [*TINY, "--max_iters=30", "--eval_interval=10", "--grad_accum_steps=2", "--dtype=float32", "--max_new_tokens=20"]


def val_losses(folder: Path) -> list[float]:
    return [float(row["val_loss"]) for row in train_log(folder)]


def torchrun(port: int, script: Path = REPO / "gpt.py") -> list[str]:
    """`torchrun --nproc_per_node=2 gpt.py` (or script, which runs it): 2 CPU processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", str(script)]


def run_torchrun(args: list[str], cwd: Path, port: int, script: Path = REPO / "gpt.py") -> subprocess.CompletedProcess:
    command = [*torchrun(port, script), *on_the_cpu(args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=patience(300))


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


# Runs gpt.py with rank 1 scoring every token 1.0 worse than rank 0 does: a GPU of another kind, which rounds
# differently, exaggerated. A constant added to the loss leaves its gradients, so both train the same model.
RANK_1_SCORES_WORSE = """
import os, torch
cross_entropy = torch.nn.functional.cross_entropy
def worse(logits, targets, **options):  # gpt.py sums the loss over the targets: +1.0 for each
    return cross_entropy(logits, targets, **options) + len(targets)
if os.environ["RANK"] == "1":
    torch.nn.functional.cross_entropy = worse
"""


def test_target_loss_stops_every_process_at_rank_0s_step_when_their_val_losses_differ(shakespeare):
    (shakespeare / "launch.py").write_text(patched_gpt(RANK_1_SCORES_WORSE))
    args = [*ARGS, "--max_iters=60", "--target_loss=3.3"]
    result = run_torchrun(args, shakespeare, port=29519, script=shakespeare / "launch.py")
    # rank 1 never reaches 3.3 by its own count. Going on alone, it would wait in vain for rank 0 at the
    # next step (gloo notices rank 0 has left and fails it; NCCL on GPUs would wait until a timeout)
    assert result.returncode == 0, result.stderr
    assert "reached the target val loss 3.3 at step 20: stopping early" in result.stdout
    assert [row["step"] for row in train_log(shakespeare)] == ["0", "10", "20"]


# Runs gpt.py with rank 0's CPU multiplying bf16 natively and rank 1's not: machines of two kinds
RANK_1_LACKS_BF16 = """
import os, torch
has_bf16 = os.environ["RANK"] == "0"
torch.cpu._is_avx512_bf16_supported = torch.cpu._is_amx_tile_supported = lambda: has_bf16
"""


def test_processes_on_different_hardware_all_train_in_a_precision_every_one_does_well(shakespeare):
    (shakespeare / "launch.py").write_text(patched_gpt(RANK_1_LACKS_BF16))
    args = [*TINY, "--max_iters=2", "--eval_interval=2", "--max_new_tokens=5"]
    result = run_torchrun(args, shakespeare, port=29523, script=shakespeare / "launch.py")
    assert result.returncode == 0, result.stderr
    # alone, rank 0 would pick bf16 and rank 1 fp32, and their steps would round differently
    assert "cpu, float32: the best every process does well (this one alone would use bfloat16)\n" in result.stdout
    asked = run_torchrun([*args, "--dtype=bfloat16"], shakespeare, port=29524, script=shakespeare / "launch.py")
    assert asked.returncode != 0
    assert "error: not every process's cpu can do bfloat16 well: use --dtype=float32, float16 or auto" in asked.stderr


# Runs gpt.py with destroy_process_group saying when it is called
NOTE_DESTROY = """
import sys, torch.distributed
destroy = torch.distributed.destroy_process_group
def noted(*args, **kwargs):
    destroy(*args, **kwargs)
    print("process group destroyed", file=sys.stderr)
torch.distributed.destroy_process_group = noted
"""


def test_a_run_ended_by_an_error_still_leaves_the_process_group_in_every_process(shakespeare):
    (shakespeare / "launch.py").write_text(patched_gpt(NOTE_DESTROY))
    result = run_torchrun([*TINY, "--n_head=5"], shakespeare, port=29521, script=shakespeare / "launch.py")
    assert result.returncode != 0
    assert result.stderr.count("error: n_embd (32) must be divisible by n_head (5)") == 2
    assert result.stderr.count("process group destroyed") == 2


# Runs gpt.py as if each of the two processes had a machine of its own (torchrun --nnodes=2 --nproc_per_node=1)
ONE_PROCESS_PER_MACHINE = """
import os
os.environ["LOCAL_WORLD_SIZE"] = "1"
"""


@pytest.mark.parametrize(
    "patch, port, to_continue",
    [
        ("", 29520, f"torchrun --nproc_per_node=2 {REPO / 'gpt.py'} --resume\n"),
        (
            ONE_PROCESS_PER_MACHINE,
            29522,
            "the same torchrun command on every machine, with --resume, "
            "once every machine has trained_model.resume.pth\n",
        ),
    ],
    ids=["one machine", "two machines"],
)
def test_ctrl_c_under_torchrun_saves_gives_the_command_to_continue_and_leaves_the_process_group(
    shakespeare, patch, port, to_continue
):
    (shakespeare / "launch.py").write_text(patched_gpt(NOTE_DESTROY + patch))
    args = [*TINY, "--max_iters=100000", "--eval_interval=1000", "--max_new_tokens=5"]
    unbuffered = {**os.environ, "PYTHONUNBUFFERED": "1"}  # so the test can follow the output line by line
    process = subprocess.Popen(
        [*torchrun(port=port, script=shakespeare / "launch.py"), *args],
        cwd=shakespeare,
        env=unbuffered,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:  # wait until training has begun, then press Ctrl-C
        if line.startswith("step 0:"):
            break
    process.send_signal(signal.SIGINT)  # torchrun passes it on to every process
    out, err = process.communicate(timeout=patience(120))
    assert f"; saved trained_model.resume.pth\nto continue: {to_continue}" in out, err
    assert err.count("process group destroyed") == 2
