"""--minutes: a run fitted to a time budget saves its model, says how it was fitted, and can be run again exactly
(speed and loss for each budget are bench/budget.py's business, not a test's)."""

import re
import shlex

import torch

from conftest import QUICK, TINY, copy_of, one_line_error, patience_factor, run_script, train_log


def test_a_run_fitted_to_its_minutes_saves_a_model_and_its_printed_flags_repeat_it_exactly(shakespeare):
    budget = round(0.5 * patience_factor(), 1)  # half a minute, or what buys as many steps on a slower machine
    args = [*TINY, f"--minutes={budget:g}", "--sample_tokens=20", "--max_new_tokens=20"]
    fitted = run_script("gpt.py", args, shakespeare)
    assert fitted.returncode == 0, fitted.stderr
    said = re.search(
        rf"fitted to {budget:g} minutes?: ([\d,]+) steps at .*; the same run again:\n  python \S+ (.*)", fitted.stdout
    )
    assert said, fitted.stdout
    steps, flags = int(said[1].replace(",", "")), shlex.split(said[2])
    assert steps > 10 and f"--max_iters={steps}" in flags
    assert "--optimizer=muon" in flags  # the budget's choice on a CPU, for the knobs not given
    # the steps can run slower than the first ones measured (a busy machine): then the budget's deadline ends the
    # run early, at a step it says, evaluating there
    spent = re.search(r"budget is spent: step (\d+) is the last", fitted.stdout)
    last = int(spent[1]) if spent else steps
    state = torch.load(shakespeare / "trained_model.resume.pth", weights_only=True)
    assert state["hyperparameters"]["max_iters"] == last and state["finished"]  # the saved settings are the fitted ones
    saved = torch.load(shakespeare / "trained_model.pth", weights_only=True)
    assert train_log(shakespeare)[-1]["step"] == str(last)
    # the same run, with the printed flags instead of --minutes, elsewhere: the same log as far as both went, and
    # if the fitted run was not cut short, the same weights
    again = copy_of(shakespeare, f"{shakespeare.name}_again")  # (beside it: the folder above is shared)
    assert run_script("gpt.py", flags, again).returncode == 0  # the printed flags alone: every knob the run set
    both = {row["step"] for row in train_log(again)} & {row["step"] for row in train_log(shakespeare)}
    assert len(both) >= 2  # step 0 and at least one evaluation after the fit
    assert [r for r in train_log(again) if r["step"] in both] == [
        r for r in train_log(shakespeare) if r["step"] in both
    ]
    if not spent:
        repeated = torch.load(again / "trained_model.pth", weights_only=True)
        assert all(torch.equal(repeated["model"][k], w) for k, w in saved["model"].items())
    # and --resume knows where the fitted run ended
    resumed = run_script("gpt.py", ["--resume"], shakespeare)
    assert f"the saved run already ended at step {last} of --max_iters={last}" in resumed.stdout


def test_minutes_refuses_the_flags_it_decides_itself(shakespeare):
    error = one_line_error(run_script("gpt.py", [*QUICK, "--minutes=1"], shakespeare))
    assert "--minutes chooses --max_iters, --eval_interval itself: drop --max_iters and --eval_interval" in error


def test_minutes_is_refused_with_resume_which_keeps_the_saved_runs_steps(trained):
    error = one_line_error(run_script("gpt.py", ["--resume", "--minutes=1"], trained))
    assert "--minutes fits a new run; a resumed run keeps its steps: drop --minutes" in error


def test_minutes_refuses_a_head_count_that_does_not_divide_the_budgets_width(shakespeare):
    # the 1-minute shape is 128 wide: the user's --n_head=5 joins it, and is checked with it before anything runs
    error = one_line_error(run_script("gpt.py", ["--minutes=1", "--n_head=5"], shakespeare))
    assert error.startswith("error: n_embd (128) must be divisible by n_head (5): use one of --n_head=1, 2, 4")
