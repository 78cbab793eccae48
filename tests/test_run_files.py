"""Nothing a user had is lost: a run's files as one set, safe temporary files, divergence caught before it
saves, the earlier log kept, and every failure one line. Each test runs gpt.py as a user does."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    QUICK,
    REPO,
    TINY,
    ctrl_c,
    on_the_cpu,
    one_line_error,
    patched_gpt,
    patience,
    run_script,
    snapshot,
    start_gpt,
    train_log,
    write_shakespeare,
)


@pytest.mark.parametrize(
    "model_file, message",
    [
        ("loss.png", "would write the model and the loss plot to the same file, loss.png"),
        ("input.txt.char.tokens", "would write the model and the char token cache to the same file"),
        ("input.txt.gpt2.tokens.json", "the model and the gpt2 token cache's description to the same file"),
        ("train_log.csv", "would write the model and the log to the same file"),
    ],
)
def test_a_model_named_like_another_file_of_the_run_is_refused_before_anything_is_written(trained, model_file, message):
    before = snapshot(trained)
    error = one_line_error(run_script("gpt.py", [*QUICK, f"--model_file={model_file}"], trained))
    assert message in error
    assert snapshot(trained) == before


def test_a_link_planted_where_a_temporary_file_used_to_go_is_never_followed(trained):
    victim = trained.parent / "victim.txt"
    victim.write_text("precious")
    for name in ("trained_model.pth.tmp", "trained_model.resume.pth.tmp", "input.txt.char.tokens.tmp"):
        (trained / name).symlink_to(victim)
    (trained / "input.txt").write_text((trained / "input.txt").read_text() + "\nmore\n")  # rebuilds the cache
    assert run_script("gpt.py", [*QUICK, "--seed=5"], trained).returncode == 0
    assert victim.read_text() == "precious"
    assert not [p for p in trained.iterdir() if re.fullmatch(r"\..*\.tmp", p.name)]  # none left behind


def test_temporary_files_of_a_killed_run_are_cleaned_up_and_a_live_runs_are_not(trained):
    dead = trained / ".trained_model.pth.999999999.gpt-k1ll3d.tmp"  # no process has that id
    live = trained / f".trained_model.pth.{os.getpid()}.gpt-alive0.tmp"  # this test's own process
    users = trained / ".notes.2024.draft.tmp"  # a user's file whose name looks like a temporary one
    for path in (dead, live, users):
        path.write_bytes(b"half a checkpoint")
    assert run_script("gpt.py", QUICK, trained).returncode == 0
    assert not dead.exists() and live.exists() and users.exists()


def test_a_loss_that_explodes_but_stays_finite_stops_before_it_replaces_the_model_or_the_state(trained):
    before = snapshot(trained)
    diverging = [*TINY, "--learning_rate=10", "--min_lr=0", "--warmup_iters=1", "--max_iters=40", "--eval_interval=5"]
    error = one_line_error(run_script("gpt.py", diverging, trained))
    assert "at step 5, more than 1 above both its first evaluation (4.13) and guessing uniformly (4.13)" in error
    assert snapshot(trained) == before  # model, resume state and log as the earlier run left them


def test_a_resumed_run_that_diverges_is_stopped_the_same_way(trained):
    def weights(name: str) -> dict:
        checkpoint = torch.load(trained / name, weights_only=True)
        return {"step": checkpoint["step"], **checkpoint["model"], **checkpoint.get("trained_model", {})}

    before = {name: weights(name) for name in ("trained_model.pth", "trained_model.resume.pth")}
    resumed = ["--resume", "--learning_rate=10", "--max_iters=60", "--eval_interval=5", "--warmup_iters=1"]
    error = one_line_error(run_script("gpt.py", resumed, trained))
    assert "the run diverged; try a lower --learning_rate" in error
    for name, saved in before.items():  # it may save step 20 again, as it was, but nothing after it
        after = weights(name)
        assert after.keys() == saved.keys()
        assert all(torch.equal(torch.as_tensor(after[k]), torch.as_tensor(saved[k])) for k in saved)


def test_a_run_killed_before_its_first_evaluation_leaves_the_earlier_log_whole(trained):
    before = (trained / "train_log.csv").read_bytes()
    slow = [*TINY, "--eval_iters=100000", "--max_iters=20"]  # its first evaluation takes minutes
    process = start_gpt(slow, trained)
    for line in process.stdout:
        if line.startswith("model:"):  # set up, now evaluating step 0
            break
    time.sleep(1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=patience(60))
    assert (trained / "train_log.csv").read_bytes() == before


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MB file system of its own (tmpfs), so that a test can fill it. Needs root to mount."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)]).returncode == 0
    )
    if not mounted:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root and must be able to mount a tmpfs for the full-disk test")
        pytest.skip("mounting a small file system needs root")
    yield folder
    subprocess.run(["umount", str(folder)])


def test_a_full_disk_during_a_save_gets_one_line_and_leaves_the_earlier_files_and_no_temporary_one(small_disk):
    write_shakespeare(small_disk)
    assert run_script("gpt.py", QUICK, small_disk).returncode == 0
    before = snapshot(small_disk)
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - 100_000))  # room for the log, not a checkpoint
    error = one_line_error(run_script("gpt.py", [*QUICK, "--seed=2"], small_disk))
    assert "No space left on device" in error
    after = snapshot(small_disk)
    assert {name: after[name] for name in before} == before
    assert not [p for p in small_disk.iterdir() if p.name.endswith(".tmp")]


def test_running_out_of_cpu_memory_inside_pytorch_gets_one_line(shakespeare):
    # a process allowed 4 GB of address space, fewer than the machine says are free (as under some container
    # limits), so the estimate lets through a model that needs 8 GB: PyTorch raises a RuntimeError, not MemoryError
    resource = pytest.importorskip("resource", reason="limiting a process's memory needs resource, which Windows lacks")

    def at_most_4_gb():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    args = on_the_cpu([*TINY, "--n_layer=2", "--n_embd=4096", "--n_head=8"])
    result = subprocess.run([sys.executable, str(REPO / "gpt.py"), *args], cwd=shakespeare, preexec_fn=at_most_4_gb,
                            capture_output=True, text=True, timeout=patience(300))  # fmt: skip
    assert "out of memory: use a smaller --batch_size, --block_size or model" in one_line_error(result)


def damage(path: Path, change) -> None:
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("trained_model.pth", lambda c: c.update(tokenizer={}), "its tokenizer is {}"),
        ("trained_model.pth", lambda c: c.update(step="ten"), "its 'step' is missing or not a int"),
        ("trained_model.resume.pth", lambda c: c.pop("sampler"), "its 'sampler' is missing or not a dict"),
        ("trained_model.resume.pth", lambda c: c.update(torch_rng=[1, 2]), "its 'torch_rng' is missing"),
        ("trained_model.resume.pth", lambda c: c["optimizer"].update(state={0: "x"}), "its state does not fit"),
    ],
)
def test_a_checkpoint_that_loads_but_is_inconsistent_gets_one_line(trained, name, change, message):
    damage(trained / name, change)
    before = snapshot(trained)
    mode = "--resume" if "resume" in name else "--sample"
    error = one_line_error(run_script("gpt.py", [mode, "--max_iters=30"], trained))
    assert f"'{name}' is damaged" in error and message in error
    assert snapshot(trained) == before


def test_a_temperature_too_small_to_divide_by_is_refused_and_a_tiny_top_p_samples(trained):
    assert "--temperature must be 0" in one_line_error(
        run_script("gpt.py", ["--sample", "--temperature=1e-40"], trained)
    )
    result = run_script("gpt.py", ["--sample", "--top_p=1e-300", "--max_new_tokens=20"], trained)
    assert result.returncode == 0, result.stderr  # only the likeliest token is left: greedy


@pytest.mark.parametrize(
    "args, message",
    [
        (["--learning_rate=-1"], "--learning_rate must be above 0, not -1.0"),
        (["--learning_rate=nan"], "--learning_rate must be a finite number, not nan"),
        (["--seed=18446744073709551615"], "--seed must be from 0 to 2**63 - 2"),
        (["--learning_rate=1e308"], "--learning_rate must be at most 3.4e+38 (the largest float32)"),
        ([f"--batch_size=1{'0' * 400}"], "--batch_size must be at most 2,147,483,647"),
    ],
)
def test_bigram_refuses_what_gpt_py_refuses_in_one_line(shakespeare, args, message):
    assert message in one_line_error(run_script("bigram.py", args, shakespeare))


def test_ctrl_c_while_the_libraries_load_stops_quietly(shakespeare):
    process = start_gpt(TINY, shakespeare)
    time.sleep(0.5)  # torch takes a second or more to import
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=patience(60))
    assert out == ""  # it had not got as far as its first line
    assert process.returncode == 130 and "Traceback" not in err, err


# Ctrl-C in the instant after torch has loaded, as the rest of gpt.py loads: at gpt.py's own import of tqdm
CTRL_C_AS_TQDM_LOADS = """
import builtins, os, signal
load = builtins.__import__
def ctrl_c_at_tqdm(name, globals=None, *args, **options):
    if name == "tqdm" and (globals or {}).get("__file__", "").endswith("gpt.py"):
        os.kill(os.getpid(), signal.SIGINT)
    return load(name, globals, *args, **options)
builtins.__import__ = ctrl_c_at_tqdm
"""


def test_ctrl_c_after_the_libraries_load_but_before_the_run_starts_stops_quietly(shakespeare):
    (shakespeare / "launch.py").write_text(patched_gpt(CTRL_C_AS_TQDM_LOADS))
    result = subprocess.run([sys.executable, "launch.py", *QUICK], cwd=shakespeare, capture_output=True, text=True,
                            timeout=patience(60))  # fmt: skip
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""


def test_resuming_a_finished_run_says_so_and_touches_nothing(trained):
    before = snapshot(trained)
    result = run_script("gpt.py", ["--resume"], trained)
    assert result.returncode == 0, result.stderr
    assert "the saved run already ended at step 20 of --max_iters=20; to train on, add --max_iters=M" in result.stdout
    assert "--- sample" not in result.stdout  # nothing evaluated, saved, plotted or sampled again
    assert snapshot(trained) == before


def test_a_resumed_run_starts_from_the_best_loss_its_model_file_holds_and_says_how_long_it_all_took(trained):
    best = torch.load(trained / "trained_model.pth", weights_only=True)["best_val_loss"]
    result = run_script("gpt.py", ["--resume", "--max_iters=30", "--max_new_tokens=1"], trained)
    assert result.returncode == 0, result.stderr
    assert f"resuming at step 20 (best val loss so far {best:.4f})" in result.stdout
    assert re.search(r"done in \d+ s \(\d+ s in all\)", result.stdout)


def test_sampling_names_the_flags_it_ignores_and_still_samples(trained):
    # the training command with --sample added: --input_file is not read, the text is the model's
    args = ["--sample", "--input_file=other.txt", "--max_iters=5", "--max_new_tokens=3"]
    result = run_script("gpt.py", args, trained)
    assert result.returncode == 0, result.stderr
    assert "--sample ignores --input_file, --max_iters: they are for training a model" in result.stdout
    assert "--- sample 1 of 2 ---" in result.stdout


def test_a_run_says_how_long_it_will_take_once_its_first_steps_are_measured(shakespeare):
    result = run_script("gpt.py", [*TINY, "--max_iters=40", "--eval_interval=20", "--max_new_tokens=1"], shakespeare)
    assert result.returncode == 0, result.stderr
    said = re.search(r"about \d+ s more: 30 steps at [\d.e-]+ s and 2 evaluations at [\d.e-]+ s", result.stdout)
    assert said, result.stdout


@pytest.mark.smoke
def test_a_new_run_keeps_an_unfinished_run_says_how_to_go_on_with_it_and_never_drops_it_unasked(shakespeare):
    ctrl_c([*TINY, "--max_iters=100000", "--eval_interval=10"], shakespeare, after="step 10:")
    unfinished = (shakespeare / "trained_model.resume.pth").read_bytes()

    new_run = run_script("gpt.py", QUICK, shakespeare)
    assert new_run.returncode == 0, new_run.stderr
    said = re.search(r"trained_model.resume.pth holds an unfinished run \(step (\d+) of 100,000\)", new_run.stdout)
    assert said and int(said[1]) >= 10, new_run.stdout
    assert "--resume --model_file=trained_model.prev.pth" in new_run.stdout
    assert (shakespeare / "trained_model.prev.resume.pth").read_bytes() == unfinished

    before = snapshot(shakespeare)  # another new run would replace the kept one: refused, nothing touched
    error = one_line_error(run_script("gpt.py", QUICK, shakespeare))
    assert "trained_model.prev.resume.pth holds an unfinished run" in error and "--discard_unfinished" in error
    assert snapshot(shakespeare) == before

    # going on with it as the message says continues that run in the kept files, its own log included
    go_on = ["--resume", "--model_file=trained_model.prev.pth", "--max_iters=30"]
    assert run_script("gpt.py", go_on, shakespeare).returncode == 0
    assert [row["step"] for row in train_log(shakespeare)] == ["0", "10", "20"]  # the second run's, untouched
    kept = list(csv.DictReader(open(shakespeare / "train_log.prev.csv")))
    assert [row["step"] for row in kept] == ["0", "10", "20", "30"]
    # finished now: a new run may replace it, and says nothing of an unfinished run
    assert "unfinished" not in run_script("gpt.py", QUICK, shakespeare).stdout


@pytest.mark.parametrize("planted", ["loss.prev.png", "train_log.csv"])
def test_keeping_the_earlier_run_is_all_or_nothing(trained, planted):
    # a second run makes the .prev files; a third one must replace all four of them or none. A folder where a file
    # is kept (the last one kept), or where one to keep is (the log), stops it
    assert run_script("gpt.py", [*QUICK, "--seed=2"], trained).returncode == 0
    (trained / planted).unlink()
    (trained / planted).mkdir()
    before = snapshot(trained)
    error = one_line_error(run_script("gpt.py", [*QUICK, "--seed=3"], trained))
    assert snapshot(trained) == before  # the kept run, the run before it and no temporary file left
    assert "cannot keep the earlier run's" in error and "nothing was changed" in error


def test_a_second_run_in_a_folder_where_one_is_training_is_refused_and_a_killed_run_leaves_no_lock(trained):
    # two runs in one folder would each keep the other's files as the earlier run's, and lose the real earlier run
    earlier = snapshot(trained)
    first = start_gpt([*TINY, "--max_iters=100000", "--eval_interval=10"], trained)
    for line in first.stdout:
        if line.startswith("step 10:"):
            break
    try:
        error = one_line_error(run_script("gpt.py", QUICK, trained))
        assert f"another gpt.py run (process {first.pid}) is training in" in error
        assert (trained / "trained_model.prev.pth").read_bytes() == earlier["trained_model.pth"]
    finally:
        first.kill()  # as a crash would: the lock goes with the process
        first.communicate()
    assert run_script("gpt.py", QUICK, trained).returncode == 0


def set_in(part: str, name: str, value: object):
    return lambda checkpoint: checkpoint[part].update({name: value})


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("trained_model.pth", set_in("config", "n_head", 0), "--n_head must be at least 1, not 0"),
        ("trained_model.pth", set_in("config", "n_head", 5), "n_embd (32) must be divisible by n_head (5)"),
        ("trained_model.pth", set_in("config", "dropout", 2.0), "--dropout must be from 0 up to"),
        ("trained_model.pth", set_in("config", "block_size", 1), "--block_size must be at least 2, not 1"),
        ("trained_model.pth", set_in("tokenizer", "chars", "abc"), "reads 62 tokens but its char tokenizer has 3"),
        ("trained_model.pth", set_in("tokenizer", "chars", ""), "reads 62 tokens but its char tokenizer has 0"),
        ("trained_model.pth", lambda c: c.update(tokenizer={"kind": "gpt2"}), "its gpt2 tokenizer has 50257"),
        ("trained_model.pth", set_in("model", "wte.weight", torch.full((62, 32), float("nan"))), "NaN or infinity"),
        ("trained_model.resume.pth", set_in("hyperparameters", "n_layer", 2.0), "--n_layer takes a whole number"),
        ("trained_model.resume.pth", set_in("hyperparameters", "max_iters", None), "not 'None'"),
        ("trained_model.resume.pth", set_in("hyperparameters", "learning_rate", "fast"), "--learning_rate takes a"),
        ("trained_model.resume.pth", set_in("hyperparameters", "beta2", 2.0), "--beta2 must be from 0 up to"),
    ],
)
def test_a_checkpoint_whose_settings_cannot_work_gets_one_line_as_the_command_line_would(
    trained, name, change, message
):
    damage(trained / name, change)
    before = snapshot(trained)
    mode = "--resume" if "resume" in name else "--sample"
    error = one_line_error(run_script("gpt.py", [mode, "--max_iters=30"], trained))
    assert f"'{name}'" in error and message in error
    assert snapshot(trained) == before


@pytest.mark.parametrize("row", ["abc,def", "10", "10,2560,1.2,0.5,,2.1,0.001"])
def test_a_damaged_log_row_is_named_when_resuming_and_the_run_touches_nothing(trained, row):
    lines = (trained / "train_log.csv").read_text().splitlines()
    lines[2] = row  # line 3: the evaluation at step 10
    (trained / "train_log.csv").write_text("\n".join(lines) + "\n")
    before = snapshot(trained)
    error = one_line_error(run_script("gpt.py", ["--resume", "--max_iters=30"], trained))
    assert "the log 'train_log.csv' is damaged at line 3" in error
    assert snapshot(trained) == before


@pytest.mark.parametrize("planted", ["trained_model.resume.pth", "train_log.csv"])
def test_a_pipe_where_a_resumed_run_reads_is_refused_instead_of_waiting_forever(trained, planted):
    (trained / planted).unlink()
    os.mkfifo(trained / planted)
    error = one_line_error(run_script("gpt.py", ["--resume", "--max_iters=30"], trained, timeout=60))
    assert f"'{planted}'" in error


@pytest.mark.parametrize(
    "description",
    ["[]", "null", '{"chars": 5}', "edited", "pipe"],  # edited: a character fewer than the tokens use
)
def test_a_damaged_token_cache_is_made_again(trained, description):
    path = trained / "input.txt.char.tokens.json"
    if description == "edited":
        info = json.loads(path.read_text())
        path.write_text(json.dumps({**info, "chars": info["chars"][:-1]}))
    elif description == "pipe":
        path.unlink()
        os.mkfifo(path)
    else:
        path.write_text(description)
    for script, args in (("gpt.py", QUICK), ("bigram.py", ["--max_iters=10"])):
        result = run_script(script, args, trained, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "tokenizing input.txt once" in result.stdout or script == "bigram.py"
        assert json.loads(path.read_text())["chars"] == "".join(sorted(set((trained / "input.txt").read_text())))


def test_a_text_replaced_by_another_of_the_same_size_and_time_is_tokenized_again(shakespeare):
    text = shakespeare / "input.txt"
    assert run_script("gpt.py", QUICK, shakespeare).returncode == 0
    when = text.stat().st_mtime_ns
    text.write_text(text.read_text().upper())  # the same size: ASCII letters keep their length
    os.utime(text, ns=(when, when))
    result = run_script("gpt.py", QUICK, shakespeare)
    assert result.returncode == 0, result.stderr
    assert "tokenizing input.txt once" in result.stdout
    assert not any(c.islower() for c in json.loads((shakespeare / "input.txt.char.tokens.json").read_text())["chars"])


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"RANK": "0"}, "LOCAL_RANK is not set, but torchrun sets RANK, LOCAL_RANK and WORLD_SIZE"),
        ({"RANK": "abc", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}, "RANK is set to 'abc'"),
    ],
)
def test_a_torchrun_environment_set_in_part_gets_one_line_naming_the_variable(shakespeare, environment, message):
    result = subprocess.run(
        [sys.executable, str(REPO / "gpt.py"), *on_the_cpu(QUICK)], cwd=shakespeare, capture_output=True, text=True,
        env={**os.environ, **environment}, timeout=patience(60),
    )  # fmt: skip
    assert message in one_line_error(result)
