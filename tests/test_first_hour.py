"""What a newcomer met in their first hour, each made impossible to meet again: a second run keeps the first
run's model, settings that cannot fit are refused at once, the output fits 80 columns and pipes cleanly, an
offline --init_from fails at once, one name for the model file. Each test runs gpt.py (or app.py) as a user does."""

import os
import re
import struct
import subprocess
import sys

import pytest

from conftest import QUICK, REPO, TINY, on_the_cpu, one_line_error, patience, run_script, snapshot, write_shakespeare

RUN_FILES = ["trained_model.pth", "trained_model.resume.pth", "train_log.csv", "loss.png"]
KEPT = ["trained_model.prev.pth", "trained_model.prev.resume.pth", "train_log.prev.csv", "loss.prev.png"]


def test_a_second_run_keeps_the_first_runs_model_log_and_plot_as_the_previous_ones(trained):
    first = snapshot(trained)
    second = run_script("gpt.py", [*QUICK, "--n_layer=1"], trained)
    assert second.returncode == 0, second.stderr
    assert "trained_model.pth holds an earlier run's model, saved " in second.stdout
    assert re.search(r"step 20, val loss [\d.]+; this run keeps it as trained_model.prev.pth", second.stdout)
    kept = snapshot(trained)
    assert [kept[prev] for prev in KEPT] == [first[name] for name in RUN_FILES]  # byte for byte
    assert kept["trained_model.pth"] != first["trained_model.pth"]
    # the kept model is a model like any other: sample it, serve it, compare it
    sampled = run_script("gpt.py", ["--sample", "--model_file=trained_model.prev.pth", "--max_new_tokens=3"], trained)
    assert sampled.returncode == 0, sampled.stderr
    assert "loaded trained_model.prev.pth: step 20" in sampled.stdout
    # a third run keeps the second's: one earlier run, always the latest
    assert run_script("gpt.py", [*QUICK, "--seed=3"], trained).returncode == 0
    assert snapshot(trained)["trained_model.prev.pth"] == kept["trained_model.pth"]


def test_a_resumed_run_is_the_same_run_and_keeps_no_previous_copy(trained):
    result = run_script("gpt.py", ["--resume", "--max_iters=30", "--max_new_tokens=1"], trained)
    assert result.returncode == 0, result.stderr
    assert "holds an earlier run's model" not in result.stdout
    assert not any((trained / name).exists() for name in KEPT)


@pytest.mark.parametrize(
    "args, knobs",
    [
        (["--n_layer=48", "--n_embd=16384", "--n_head=16"], "lower --n_layer or --n_embd"),  # 150e9 weights
        (["--batch_size=100000", "--block_size=4096"], "lower --batch_size or --block_size"),  # petabytes
    ],
)
def test_settings_that_cannot_fit_in_memory_are_refused_in_one_line_before_anything_is_allocated(tmp_path, args, knobs):
    folder = write_shakespeare(tmp_path, chars=1_000_000)
    before = snapshot(folder)
    error = one_line_error(run_script("gpt.py", [*TINY, *args], folder, timeout=60))
    assert re.search(r"error: training needs about [\d.e+]+ GB .* but cpu has [\d.]+ GB free: " + knobs, error)
    assert {name for name in snapshot(folder)} - set(before) <= {"input.txt.char.tokens", "input.txt.char.tokens.json"}


def test_the_model_line_says_how_much_memory_training_needs(trained):
    result = run_script("gpt.py", QUICK, trained)
    assert re.search(r"training needs about [\d.]+ GB of the [\d.]+ GB free", result.stdout), result.stdout


def test_piped_output_has_no_redraws_but_plain_progress_lines_that_fit_80_columns(shakespeare):
    result = run_script("gpt.py", [*TINY, "--max_iters=20", "--eval_interval=10", "--max_new_tokens=20"], shakespeare)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "\r" not in output  # no progress bar redrawn over itself in a log file
    assert re.search(r"^step 2/20: loss [\d.]+, lr [\d.e+-]+, [\d,]+ tok/s$", result.stdout, re.MULTILINE)
    assert [line for line in output.splitlines() if len(line) > 80] == []


def test_on_an_80_column_terminal_the_bar_and_every_line_fit(shakespeare):
    why = "a pseudo-terminal needs fcntl, pty and termios, which only Unix has (not Windows)"
    fcntl = pytest.importorskip("fcntl", reason=why)
    pty = pytest.importorskip("pty", reason=why)
    termios = pytest.importorskip("termios", reason=why)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    args = on_the_cpu([*TINY, "--max_iters=20", "--eval_interval=10", "--max_new_tokens=20"])
    process = subprocess.Popen([sys.executable, str(REPO / "gpt.py"), *args], cwd=shakespeare, stdin=terminal,
                               stdout=terminal, stderr=terminal, close_fds=True)  # fmt: skip
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait(timeout=patience(60)) == 0
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", shown.decode())  # cursor moves, if any
    bars = [line for line in re.split(r"[\r\n]", text) if "|" in line and "/20" in line]
    assert re.search(r"^100%\|█+\| 20/20 .*, loss [\d.]+, lr [\d.e+-]+, [\d,]+ tok/s$", bars[-1]), bars[-1]
    assert [line for line in re.split(r"[\r\n]", text) if len(line) > 80] == []


def test_init_from_gpt2_offline_without_cached_weights_fails_at_once_in_one_line(shakespeare, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty_cache"), "HF_ENDPOINT": "http://127.0.0.1:1"}
    for name in ("HF_HUB_OFFLINE", "http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(name, None)  # (behind a proxy only the download itself can tell, so gpt.py would try it)
    args = on_the_cpu(["--init_from=gpt2"])
    result = subprocess.run([sys.executable, str(REPO / "gpt.py"), *args], cwd=shakespeare, env=env,
                            capture_output=True, text=True, timeout=patience(120))  # fmt: skip
    error = one_line_error(result)
    assert "--init_from=gpt2: GPT-2's weights are not in the Hugging Face cache" in error
    assert "127.0.0.1 cannot be reached" in error and "hf download gpt2" in error
    assert result.stderr.strip() == error  # none of the hub client's retries and warnings first


def test_the_model_file_has_one_name_in_gpt_py_and_app_py_and_the_old_names_still_work(trained):
    for flag in ("--model_file", "--out_file"):
        result = run_script("gpt.py", ["--sample", f"{flag}=other.pth"], trained)
        assert "error: no checkpoint at 'other.pth'" in result.stderr
    for flag in ("--model_file", "--checkpoint"):
        result = run_script("app.py", [f"{flag}=other.pth"], trained, timeout=120)
        assert "no checkpoint at 'other.pth'" in result.stderr, result.stderr


@pytest.mark.parametrize("path", [*KEPT, "my_gpt2/model.safetensors"])
def test_git_ignores_what_runs_write_including_the_kept_files_and_the_readmes_export(path):
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO)
    assert ignored.returncode == 0, f"{path} is not in .gitignore"
