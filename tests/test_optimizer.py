"""--optimizer=muon: Muon for the blocks' weight matrices, AdamW for the rest, as one optimizer to the run."""

import shlex
import subprocess
import sys

import pytest
import torch

from conftest import (
    QUICK,
    TINY,
    one_line_error,
    patched_gpt,
    patience,
    patience_factor,
    run_script,
    snapshot,
    train_log,
)
from gpt import GPT, MUON, GPTConfig, Hyperparameters, make_optimizer


def best_val_loss(result) -> float:
    assert result.returncode == 0, result.stderr
    return float(result.stdout.split("best val loss ")[1].split(",")[0].split(";")[0])


def test_muon_learns_more_per_step_than_adamw(shakespeare):
    # the same seed, data and schedule: only the blocks' matrices are stepped another way. Were Muon given no
    # matrix (or every one), the two runs would match or Muon would diverge; at this size it is ~0.3 lower
    args = [*TINY, "--max_iters=100", "--eval_interval=50", "--max_new_tokens=1"]
    adamw = best_val_loss(run_script("gpt.py", args, shakespeare))
    muon = best_val_loss(run_script("gpt.py", [*args, "--optimizer=muon"], shakespeare))
    assert muon < adamw - 0.1, (muon, adamw)


def test_muon_steps_exactly_as_torch_muon_on_the_blocks_matrices_and_adamw_on_the_rest():
    # the reference: the two optimizers built by hand on the split the Muon literature uses (hidden matrices to
    # Muon; embeddings, and so the tied head, biases and gains to AdamW, decaying the embeddings only)
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)
    ours, reference = GPT(config), GPT(config)
    reference.load_state_dict(ours.state_dict())
    hp = Hyperparameters(optimizer="muon")
    optimizer = make_optimizer(ours, hp, fused=False)
    params = dict(reference.named_parameters())
    hidden = [p for name, p in params.items() if name.startswith("blocks.") and p.dim() == 2]
    muon = torch.optim.Muon(hidden, lr=hp.learning_rate, weight_decay=hp.weight_decay, adjust_lr_fn="match_rms_adamw")
    embeddings = [params["wte.weight"], params["wpe.weight"]]
    rest = [p for name, p in params.items() if p.dim() < 2]
    groups = [{"params": embeddings, "weight_decay": hp.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(groups, lr=hp.learning_rate, betas=(hp.beta1, hp.beta2))
    idx = torch.randint(50, (4, 17))
    for _ in range(3):
        for model, steppers in ((ours, [optimizer]), (reference, [muon, adamw])):
            model(idx[:, :-1], idx[:, 1:])[1].backward()
            for stepper in steppers:
                stepper.step()
                stepper.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), reference.parameters()))


def test_resuming_with_the_other_optimizer_is_refused_and_touches_nothing(shakespeare):
    assert run_script("gpt.py", [*QUICK, "--optimizer=muon"], shakespeare).returncode == 0
    before = snapshot(shakespeare)
    result = run_script("gpt.py", ["--resume", "--max_iters=30", "--optimizer=adamw"], shakespeare)
    assert one_line_error(result) == (
        "error: cannot resume with --optimizer=adamw: the saved run trained with muon; drop the flag, "
        "or start a new run without --resume"
    )
    assert snapshot(shakespeare) == before
    resumed = run_script("gpt.py", ["--resume", "--max_iters=30"], shakespeare)  # it keeps muon itself
    assert resumed.returncode == 0, resumed.stderr
    assert [row["step"] for row in train_log(shakespeare)] == ["0", "10", "20", "30"]


def test_muon_on_a_torch_without_it_says_what_it_needs(shakespeare):
    # requirements.txt lets torch be as old as 2.6; torch.optim.Muon came in 2.9
    patch = "import torch.optim\ndel torch.optim.Muon\ntorch.__version__ = '2.8.0'"
    command = [sys.executable, "-c", patched_gpt(patch), *QUICK, "--optimizer=muon"]
    result = subprocess.run(command, cwd=shakespeare, capture_output=True, text=True, timeout=patience(300))
    assert one_line_error(result) == (
        "error: --optimizer=muon needs torch 2.9 or later, not 2.8.0: pip install -U torch, or use adamw"
    )


@pytest.mark.smoke
def test_muon_trains_where_torch_has_it_and_is_refused_in_one_line_where_it_does_not(shakespeare):
    # requirements.txt lets torch be as old as 2.6, and torch.optim.Muon came in 2.9: the smoke set (.ci/run) runs
    # this on both sides of that line, so each side's promise is checked on a real torch
    result = run_script("gpt.py", [*QUICK, "--optimizer=muon"], shakespeare)
    if not hasattr(torch.optim, "Muon"):
        assert one_line_error(result) == (
            f"error: --optimizer=muon needs torch 2.9 or later, not {torch.__version__}: pip install -U torch, "
            "or use adamw"
        )
        assert not (shakespeare / "trained_model.pth").exists()
        return
    assert result.returncode == 0, result.stderr
    state = torch.load(shakespeare / "trained_model.resume.pth", weights_only=True)
    assert state["hyperparameters"]["optimizer"] == "muon"
    assert [row["step"] for row in train_log(shakespeare)] == ["0", "10", "20"]


def test_a_run_saved_before_there_was_a_choice_of_optimizer_resumes_with_adamw(trained):
    # its settings hold no 'optimizer' (and its state is AdamW's, as an AdamW run's still is)
    path = trained / "trained_model.resume.pth"
    state = torch.load(path, weights_only=True)
    del state["hyperparameters"]["optimizer"]
    torch.save(state, path)
    error = one_line_error(run_script("gpt.py", ["--resume", "--optimizer=muon"], trained))
    assert error == (
        "error: cannot resume with --optimizer=muon: the saved run trained with adamw; "
        "drop the flag, or start a new run without --resume"
    )
    resumed = run_script("gpt.py", ["--resume", "--max_iters=30", "--max_new_tokens=1"], trained)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step 20" in resumed.stdout
    assert [row["step"] for row in train_log(trained)] == ["0", "10", "20", "30"]  # on from where it was


LEARNING = [flag for flag in TINY if not flag.startswith(("--learning_rate", "--min_lr"))]  # left to --minutes
OLD_TORCH = "import torch.optim\ndel torch.optim.Muon"


@pytest.mark.parametrize(
    "why, patch, flags, printed",
    [
        ("nothing given", "", [], [f"--{name}={value}" for name, value in MUON.items()]),
        pytest.param("AdamW asked for", "", ["--optimizer=adamw"], [], marks=pytest.mark.smoke),  # on every torch
        ("a torch without Muon", OLD_TORCH, [], []),  # which the user did not ask for and cannot run
        ("a learning rate given", "", ["--learning_rate=1e-3"], ["--optimizer=muon", "--learning_rate=0.001"]),
    ],
)
def test_minutes_keeps_the_learning_rate_and_decay_tuned_for_muon_together_and_for_muon_only(
    shakespeare, why, patch, flags, printed
):
    # --minutes picks Muon on a CPU (BUDGETS) with the learning rate, its floor and the weight decay tuned for it
    # (MUON): a run that trains with AdamW, or sets one of the three, gets the defaults of the others
    budget = f"--minutes={0.3 * patience_factor():.2g}"  # enough for 100 steps after start-up, on any machine
    command = [sys.executable, "-c", patched_gpt(patch), *LEARNING, *flags, budget, "--max_new_tokens=1"]
    result = subprocess.run(command, cwd=shakespeare, capture_output=True, text=True, timeout=patience(300))
    assert result.returncode == 0, result.stderr
    fitted = shlex.split(result.stdout.split("the same run again:\n")[1].splitlines()[0])
    assert any(flag.startswith("--max_iters=") for flag in fitted)
    tuned = [flag for flag in fitted if flag.startswith(("--optimizer", "--learning_rate", "--min_lr", "--weight"))]
    assert sorted(tuned) == sorted(printed), why  # (AdamW and the others' defaults are not printed)


@pytest.mark.parametrize("value", ["Muon", "sgd"])
def test_an_unknown_optimizer_is_refused_with_the_choices(shakespeare, value):
    result = run_script("gpt.py", [*QUICK, f"--optimizer={value}"], shakespeare)
    assert one_line_error(result) == f"error: --optimizer must be one of adamw, muon, not {value!r}"
