"""A slow machine, a stop, a second run: Ctrl-C is answered at once, even in a long evaluation; a run that will
take far longer than the default promises says what fits; settings that quietly do less say so. Each test runs
gpt.py as a user does, with the slowness simulated by a patch that makes an evaluation or a step take longer."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, on_the_cpu, patched_gpt, patience, patience_factor, run_script, train_log, write_shakespeare

# every evaluation batch after step 0's (TINY's eval_iters=4, two splits) takes an hour: an evaluation that would
# never end on this machine, as a long one does on a slow machine
SLOW_EVALUATIONS = """
import time, torch
cross_entropy, batches = torch.nn.functional.cross_entropy, []
def slow(logits, targets, **options):
    if not torch.is_grad_enabled():
        batches.append(1)
        if len(batches) > 8:
            time.sleep(3600)
    return cross_entropy(logits, targets, **options)
torch.nn.functional.cross_entropy = slow
"""

# every training step takes half a second more: a machine about five times slower than the one the default was made
# for
SLOW_STEPS = """
import time, torch
cross_entropy = torch.nn.functional.cross_entropy
def slow(logits, targets, **options):
    if torch.is_grad_enabled():
        time.sleep(0.5)
    return cross_entropy(logits, targets, **options)
torch.nn.functional.cross_entropy = slow
"""


def start_patched(patch: str, args: list[str], folder: Path) -> subprocess.Popen:
    (folder / "launch.py").write_text(patched_gpt(patch))
    command = [sys.executable, "-u", str(folder / "launch.py"), *on_the_cpu(args)]
    return subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.smoke
def test_ctrl_c_during_an_evaluation_abandons_it_and_saves_the_last_steps_state(tmp_path):
    # warm-up (TINY's 10 steps) does not depend on max_iters: 10 steps of a 10-step run are the first 10 of any run
    reference = write_shakespeare(tmp_path / "reference")
    assert run_script("gpt.py", [*TINY, "--max_iters=10", "--eval_interval=10"], reference).returncode == 0
    stopped = write_shakespeare(tmp_path / "stopped")
    process = start_patched(SLOW_EVALUATIONS, [*TINY, "--max_iters=100", "--eval_interval=10"], stopped)
    for line in process.stdout:  # the plain progress line of step 10 comes just before its evaluation
        if line.startswith("step 10/"):
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=patience(120))  # (finishing that evaluation would take 8 hours)
    assert process.returncode == 130, err
    assert "interrupted at step 10; saved trained_model.resume.pth" in out
    saved, expected = (torch.load(f / "trained_model.resume.pth", weights_only=True) for f in (stopped, reference))
    assert saved["step"] == 10 and not saved["finished"]
    assert all(torch.equal(saved["trained_model"][k], w) for k, w in expected["trained_model"].items())
    assert [row["step"] for row in train_log(stopped)] == ["0"]  # the abandoned evaluation logged nothing

    # resumed where no model has been saved yet, and between evaluations: it says so, not "inf" or "at 0 s"
    resumed = run_script("gpt.py", ["--resume", "--max_iters=30", "--eval_interval=25"], stopped)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step 10 (no model saved yet)" in resumed.stdout
    assert re.search(r"about \d+ s more: 10 steps at \S+ s and 1 evaluation to come", resumed.stdout), resumed.stdout


def test_ctrl_c_before_the_first_step_saves_nothing_and_says_so(shakespeare):
    process = start_patched(SLOW_EVALUATIONS.replace("> 8", ">= 0"), [*TINY, "--max_iters=100"], shakespeare)
    for line in process.stdout:  # step 0's evaluation is under way
        if line.startswith("model:"):
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=patience(120))
    assert process.returncode == 130, err
    assert "interrupted at step 0, before any training: nothing saved" in out
    assert not list(shakespeare.glob("*.pth")) and not (shakespeare / "train_log.csv").exists()


def watch_until_estimate(patch: str, args: list[str], folder: Path) -> str:
    """gpt.py's output up to its estimate of how long the run takes, then the run is stopped."""
    process = start_patched(patch, args, folder)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("about "):
            break
    process.kill()  # (the rest is read from the file object: it may hold the next lines already)
    rest = process.stdout.read()
    process.communicate(timeout=patience(60))
    return "".join(seen) + rest


def test_a_default_run_far_slower_than_promised_suggests_the_budget_that_fits(shakespeare):
    slow_default = watch_until_estimate(SLOW_STEPS, [], shakespeare)
    said = re.search(r"\(this machine takes ([\d.]+) minutes for the default run, .*: python \S+ --minutes=5\)",
                     slow_default)  # fmt: skip
    assert said and float(said[1]) > 15, slow_default
    # a run the user shaped themselves is theirs: no suggestion
    chosen = watch_until_estimate(SLOW_STEPS, ["--n_layer=1"], shakespeare)
    assert "about " in chosen and "--minutes=5" not in chosen


@pytest.mark.smoke
def test_settings_that_quietly_do_less_say_so_once_and_the_run_goes_on(tmp_path):
    inside_warm_up = run_script(
        "gpt.py", [*TINY, "--max_iters=5", "--eval_interval=5"], write_shakespeare(tmp_path / "a")
    )
    assert inside_warm_up.returncode == 0
    assert inside_warm_up.stdout.count("ends inside the warm-up (--warmup_iters=10)") == 1
    # 3,000 characters read 300 x 256 tokens: about 28 times over
    small_text = run_script("gpt.py", [*TINY, "--max_iters=300"], write_shakespeare(tmp_path / "b", chars=3_000))
    assert small_text.returncode == 0
    said = re.findall(r"this run reads its training text (\d+) times over", small_text.stdout)
    assert len(said) == 1 and 25 <= int(said[0]) <= 30, small_text.stdout
    assert "ends inside the warm-up" not in small_text.stdout and "times over" not in inside_warm_up.stdout


# every forward pass, in training and in evaluations, takes SECONDS more: a machine as slow as the tests need
SLOW_PASSES = """
import time, torch
cross_entropy = torch.nn.functional.cross_entropy
def slow(logits, targets, **options):
    time.sleep(SECONDS)
    return cross_entropy(logits, targets, **options)
torch.nn.functional.cross_entropy = slow
"""


def test_a_budget_holds_from_the_first_second_on_a_slow_machine(shakespeare):
    # 200 batches an evaluation at 50 ms each would take 11 x 20 s, far more than the minute: the run shortens them
    budget = round(patience_factor(), 1)  # a minute, or what buys as many steps on a slower machine
    args = [*TINY, f"--minutes={budget:g}", "--eval_iters=200", "--sample_tokens=10", "--max_new_tokens=10"]
    started = time.monotonic()
    process = start_patched(SLOW_PASSES.replace("SECONDS", "0.05"), args, shakespeare)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("done in"):  # what is left is the final samples, which a budget does not cover
            trained_for = time.monotonic() - started
            break
    out = "".join(seen) + process.communicate(timeout=patience(300))[0]
    assert process.returncode == 0, out
    assert "each evaluation reads" in out and "not 200, to leave time to train" in out
    assert f"--minutes={budget:g}: evaluating step 0, then timing the first steps" in out
    assert trained_for <= budget * 60 * 1.05, out  # the promise itself: no longer than asked (5% for noise)


def test_a_budget_too_short_for_this_machine_is_refused_before_it_starts_with_what_it_would_need(shakespeare):
    process = start_patched(SLOW_PASSES.replace("SECONDS", "1.0"), [*TINY, "--minutes=0.5"], shakespeare)
    out, err = process.communicate(timeout=patience(300))
    assert process.returncode == 1 and "Traceback" not in err
    said = re.search(r"error: --minutes=0.5 buys about (\d+) training steps here .*: give --minutes=(\d+) or more", err)
    assert said and int(said[1]) < 100 and int(said[2]) >= 5, err
    assert not list(shakespeare.glob("*.pth")) and not (shakespeare / "train_log.csv").exists()
