"""Never lose a run, never run a stranger's code: resume, interrupts, kills, unsafe files, bad input."""

import hashlib
import os
import random
import re
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    REPO,
    TINY,
    copy_of,
    ctrl_c,
    patience,
    run_script,
    snapshot,
    start_gpt,
    train_log,
    write_shakespeare,
)
from gpt import GPT, GPTConfig, load_checkpoint, resume_command


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def final_weights(folder: Path) -> dict:
    return load_checkpoint(str(folder / "trained_model.resume.pth"), "cpu")["model"]


RUN = [*TINY, "--max_iters=300", "--eval_interval=100", "--dropout=0.1", "--max_new_tokens=5"]


# the two optimizers' states are saved differently; the smoke set (.ci/run) runs AdamW's, which every torch has
@pytest.mark.parametrize("optimizer", [pytest.param("adamw", marks=pytest.mark.smoke), "muon"])
def test_ctrl_c_then_resume_gives_bit_identical_weights_to_an_uninterrupted_run(tmp_path, optimizer):
    one_go, interrupted = write_shakespeare(tmp_path / "one_go"), write_shakespeare(tmp_path / "interrupted")
    run = [*RUN, f"--optimizer={optimizer}"]
    assert run_script("gpt.py", run, one_go).returncode == 0

    out, _ = ctrl_c(run, interrupted, after="step 20/")  # once training has begun
    # the command to continue names gpt.py as it was run, and a Python that is this one: 'python' where that name
    # finds it (an active virtual environment), else its path
    python, *rest = shlex.split(out.split("to continue: ")[1].splitlines()[0])
    assert rest == [str(REPO / "gpt.py"), "--resume"]
    assert os.path.abspath(shutil.which(python)) == sys.executable
    stopped_at = int(out.split("interrupted at step ")[1].split(";")[0])
    assert 0 < stopped_at < 300  # it really stopped mid-run

    resumed = run_script("gpt.py", ["--resume"], interrupted)  # no need to repeat the settings
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {stopped_at}" in resumed.stdout
    expected, got = final_weights(one_go), final_weights(interrupted)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert train_log(interrupted) == train_log(one_go)  # the same evaluations, none repeated or missing


@pytest.mark.parametrize("mode", ["--resume", "--sample"])
def test_a_checkpoint_of_another_format_gets_one_line_and_stays_as_it_was(shakespeare, mode):
    # files written before checkpoints carried a format number have none: gpt.py does not guess at them
    args = [*TINY, "--max_iters=20", "--eval_interval=10", "--max_new_tokens=1"]
    assert run_script("gpt.py", args, shakespeare).returncode == 0
    name = "trained_model.resume.pth" if mode == "--resume" else "trained_model.pth"
    old = torch.load(shakespeare / name, weights_only=True)
    del old["format"]
    torch.save(old, shakespeare / name)
    before = (shakespeare / name).read_bytes()
    result = run_script("gpt.py", [mode, "--max_iters=30"], shakespeare)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"'{name}' was saved by another version of gpt.py (checkpoint format 1; this one reads 2)" in result.stderr
    assert (shakespeare / name).read_bytes() == before


def test_same_seed_gives_the_same_loss_curve(shakespeare):
    again = copy_of(shakespeare, "again")
    args = [*TINY, "--max_iters=40", "--eval_interval=20", "--dropout=0.1", "--max_new_tokens=1"]
    for folder in (shakespeare, again):
        assert run_script("gpt.py", args, folder).returncode == 0
    assert train_log(shakespeare) == train_log(again)


def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(shakespeare):
    # a checkpoint after every step, bigger than the page cache writes in one go
    args = [*TINY, "--n_embd=128", "--max_iters=100000", "--eval_interval=1", "--eval_iters=1"]
    rng = random.Random(0)
    for attempt in range(5):
        process = start_gpt(args + (["--resume"] if attempt else []), shakespeare)
        evaluations = (line for line in process.stdout if re.match(r"step \d+:", line))
        next(evaluations), next(evaluations)  # it has trained and saved: from now on it saves after every step
        time.sleep(rng.uniform(0, 2))
        process.kill()
        process.wait()
        for name in ("trained_model.pth", "trained_model.resume.pth"):
            if (shakespeare / name).exists():
                checkpoint = load_checkpoint(str(shakespeare / name), "cpu")  # raises if damaged
                GPT(GPTConfig(**checkpoint["config"])).load_state_dict(checkpoint["model"])
    assert (shakespeare / "trained_model.resume.pth").exists()
    finish = run_script("gpt.py", ["--resume", "--max_iters=1", "--max_new_tokens=1"], shakespeare)
    assert "cannot" not in finish.stderr and "damaged" not in finish.stderr


class CodeThatRunsOnLoad:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    folder = write_shakespeare(tmp_path_factory.mktemp("tiny_run"))
    result = run_script("gpt.py", [*TINY, "--max_iters=20", "--eval_interval=10", "--max_new_tokens=1"], folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def trained_folder(tiny_run, tmp_path) -> Path:
    """A folder where a tiny run has left its checkpoint, resume state and log (a fresh copy per test)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(trained_folder):
    marker = trained_folder / "pwned"
    torch.save({"model": CodeThatRunsOnLoad(str(marker))}, trained_folder / "evil.pth")
    result = run_script("gpt.py", ["--sample", "--model_file=evil.pth"], trained_folder)
    assert result.returncode != 0
    assert "refused to load 'evil.pth': it holds Python objects that could run code" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda good: good[: len(good) // 2], "is damaged or not a PyTorch checkpoint"),  # truncated
        (lambda good: b"just some text, not a checkpoint\n", "is damaged or not a PyTorch checkpoint"),
        (lambda good: b"First Citizen:\n", "is damaged or not a PyTorch checkpoint"),  # 'F' starts a pickle opcode
        (lambda good: None, "is a PyTorch file but not a gpt.py checkpoint"),  # a bare tensor
    ],
)
def test_damaged_or_foreign_checkpoint_gets_one_line(trained_folder, content, message):
    good = (trained_folder / "trained_model.pth").read_bytes()
    if content(good) is None:
        torch.save(torch.zeros(3), trained_folder / "other.pth")
    else:
        (trained_folder / "other.pth").write_bytes(content(good))
    result = run_script("gpt.py", ["--sample", "--model_file=other.pth"], trained_folder)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["--input_file=nothing.txt"], "cannot read 'nothing.txt' (No such file or directory)"),
        ("empty.txt", ["--input_file=empty.txt"], "'empty.txt' is empty"),
        ("short.txt", ["--input_file=short.txt"], "too short for block_size=32"),
        (None, ["--n_embd=31"], "n_embd (31) must be divisible by n_head (2)"),
        (None, ["--max_iter=5"], "did you mean --max_iters?"),
        (None, ["--batching=sliding", "--stride=50"], "--stride must be from 1 to block_size (32)"),
        (None, ["--stride=16"], "--stride=16 places sliding windows: add --batching=sliding, or drop --stride"),
        (None, ["--dropout=lots"], "--dropout takes a number, not 'lots'"),
        (
            None,
            ["--resume", "--tokenizer=gpt2"],
            "cannot resume with --tokenizer=gpt2: the saved model has tokenizer=char",
        ),
        (None, ["--resume", "--n_layer=3"], "cannot resume with --n_layer=3"),
        (None, ["--resume", "--gelu=tanh"], "cannot resume with --gelu=tanh: the saved model has gelu=exact"),
        ("greek.txt", ["--resume", "--input_file=greek.txt", "--max_iters=30"], "vocabulary lacks: 'αβγ'"),
        (None, ["--resume", "--model_file=other.pth"], "nothing to resume: no 'other.resume.pth' here"),
        (None, ["--sample", "--model_file=other.pth"], "no checkpoint at 'other.pth': train one first"),
        (None, ["--prompt=Grüße"], "vocabulary lacks: 'ßü'"),  # found before training, not at the first sample
        (None, ["--eval_interval=0"], "--eval_interval must be at least 1, not 0"),
        (None, ["--top_p=0"], "--top_p must be above 0 and at most 1"),
        (None, ["--prompt_file"], "--prompt_file needs a value: --prompt_file=..."),
        (None, ["--prompt_file=missing.txt"], "--prompt_file=missing.txt: there is no such file"),
        (None, ["--beta2=1.5"], "--beta2 must be from 0 up to (not including) 1, not 1.5"),
        (None, ["--model_file=nowhere/model.pth"], "there is no folder 'nowhere'; create it first"),
        # found before training, not when the first save fails or overwrites what the user had
        (None, ["--model_file=input.txt"], "would overwrite the text it trains on, input.txt: pick another name"),
        ("runs/", ["--model_file=runs"], "--model_file='runs' must name a file, such as trained_model.pth"),
        (None, ["--model_file="], "--model_file needs a value: --model_file=..."),
        (None, ["--export_hf="], "--export_hf needs a value: --export_hf=..."),  # it trained, over the model
        ("notes.txt", ["--export_hf=notes.txt"], "--export_hf=notes.txt is a file; name a folder"),
        (None, ["--seed=18446744073709551615"], "--seed must be from 0 to 2**63 - 2"),
        (None, ["--learning_rate=inf"], "--learning_rate must be a finite number, not inf"),
        (
            None,
            ["--learning_rate=3e-5", "--min_lr=2e-4"],
            "--min_lr=0.0002 is above --learning_rate=3e-05: add --min_lr=3e-06",
        ),
        ("model_only", ["--resume"], "holds a model but no training state to resume"),
        (None, ["--resume", "--max_iters=5"], "past --max_iters=5: raise --max_iters to go on"),
        (None, ["--init_from=./my_gpt2"], "--init_from=./my_gpt2: there is no such folder"),
        ("pipe", ["--input_file=pipe"], "'pipe' is not a file: put your training text in a file"),  # it hung
        ("pipe", ["--model_file=pipe"], "--model_file='pipe' must name a file, such as trained_model.pth, not a"),
        (None, ["--input_file=train_log.csv"], "would overwrite the text it trains on, train_log.csv"),
        ("opening.txt", ["--prompt=KING", "--prompt_file=opening.txt"], "--prompt and --prompt_file both give"),
        (None, ["--sample", "--resume"], "--sample and --resume do different things: run them one at a time"),
        (None, ["--prompt", "ROMEO:"], "'ROMEO:' is not a setting: write settings as --name=value"),
        # numbers past what the arithmetic holds: refused before any of it (they were tracebacks)
        (None, ["--sample", "--num_samples=1000000000000"], "--num_samples must be at most 10,000, not 1,000,"),
        (None, [f"--n_layer=1{'0' * 400}"], "--n_layer must be at most 2,147,483,647, not a number of over 18"),
        (None, [f"--max_iters=1{'0' * 400}"], "--max_iters must be at most 2,147,483,647"),
        (None, ["--minutes=1e307"], "--minutes must be at most 3.4e+38 (the largest float32), not 1e+307"),
        (None, [f"--batch_size={'9' * 5000}"], "--batch_size takes a whole number, not '99999999999... (5,002"),
        (None, ["--grad_accum_steps=100000000"], "100,000,000 micro-batches made at once"),  # they filled memory
        ("config.json", ["--export_hf=."], "--export_hf=. holds files an export does not write (config.json, "),
    ],
)
def test_bad_input_says_what_to_do_and_overwrites_nothing(trained_folder, setup, args, message):
    files = {"empty.txt": "", "short.txt": "To be, or not to be.\n" * 2, "greek.txt": "αβγ " * 2000}
    if setup == "runs/":
        (trained_folder / "runs").mkdir()
    elif setup == "pipe":  # a named pipe, such as `mkfifo` makes
        os.mkfifo(trained_folder / "pipe")
    elif setup == "model_only":  # a model file in the resume file's place
        shutil.copy(trained_folder / "trained_model.pth", trained_folder / "trained_model.resume.pth")
    elif setup:
        (trained_folder / setup).write_text(files.get(setup, "notes"), encoding="utf-8")
    before = snapshot(trained_folder)
    result = run_script("gpt.py", [*TINY, *args], trained_folder)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, no traceback
    after = snapshot(trained_folder)
    assert {name: after.get(name) for name in before} == before  # every file the user had is unchanged
    assert all(".tokens" in name for name in after.keys() - before.keys())  # new: at most a token cache


def test_the_resume_command_pastes_into_a_shell_even_with_a_space_in_the_path():
    command = resume_command("my runs/m.pth", world_size=1)
    assert shlex.split(command)[-2:] == ["--resume", "--model_file=my runs/m.pth"]


def test_a_diverging_run_stops_and_leaves_the_earlier_runs_model_and_state_untouched(shakespeare):
    assert run_script("gpt.py", [*TINY, "--max_iters=20", "--max_new_tokens=1"], shakespeare).returncode == 0
    before = digest(shakespeare / "trained_model.pth")
    state_before = digest(shakespeare / "trained_model.resume.pth")  # the earlier run can still be resumed
    result = run_script("gpt.py", [*TINY, "--learning_rate=1e6", "--warmup_iters=1", "--max_iters=50"], shakespeare)
    assert result.returncode != 0
    assert "the loss became nan" in result.stderr and "lower --learning_rate" in result.stderr
    assert digest(shakespeare / "trained_model.pth") == before  # not replaced by the untrained step 0
    assert digest(shakespeare / "trained_model.resume.pth") == state_before


def test_a_run_interrupted_before_it_trained_leaves_the_earlier_runs_model_untouched(trained_folder):
    before = digest(trained_folder / "trained_model.pth")
    process = start_gpt([*TINY, "--max_iters=100000", "--seed=7"], trained_folder)
    for line in process.stdout:  # step 0 has been evaluated: the point where a checkpoint used to be written
        if line.startswith("step 0:"):
            break
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=patience(120))
    assert process.returncode == 130
    assert digest(trained_folder / "trained_model.pth") == before


def test_a_path_starting_with_a_tilde_is_in_the_home_folder(shakespeare, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    args = [*TINY, "--max_iters=2", "--eval_interval=2", "--max_new_tokens=1", "--model_file=~/m.pth"]
    result = run_script("gpt.py", args, shakespeare)
    assert result.returncode == 0, result.stderr
    assert (home / "m.pth").exists() and (home / "train_log.csv").exists()
    assert not (shakespeare / "~").exists()


def test_resuming_in_a_copied_folder_writes_into_the_copy_and_leaves_the_original_alone(tmp_path):
    # the first run named its model by an absolute path, which its saved settings keep
    original = write_shakespeare(tmp_path / "A")
    args = [*TINY, "--max_iters=20", "--eval_interval=10", "--max_new_tokens=1"]
    assert run_script("gpt.py", [*args, f"--model_file={original / 'trained_model.pth'}"], original).returncode == 0
    copy = tmp_path / "B"
    shutil.copytree(original, copy)
    before = {path.name: digest(path) for path in original.iterdir()}
    resumed = run_script("gpt.py", ["--resume", "--max_iters=30", "--max_new_tokens=1"], copy)
    assert resumed.returncode == 0, resumed.stderr
    assert {path.name: digest(path) for path in original.iterdir()} == before
    assert [row["step"] for row in train_log(copy)] == ["0", "10", "20", "30"]
