"""What differs on the machines learners use (Windows, Macs, NVIDIA GPUs, older torch), simulated on Linux where
that is honest: an output encoding, a coarse clock, a CRLF checkout, a file another program holds open, fp16 with
a gradient scaler, one torchrun process whose loss goes bad. Where only a stand-in for the platform's call can run
here, the test says so."""

import os
import re
import subprocess
import sys
import time

import pytest
import torch

import gpt
from conftest import (
    REPO,
    TINY,
    ctrl_c,
    on_the_cpu,
    one_line_error,
    patched_gpt,
    patience,
    patience_factor,
    run_script,
    snapshot,
    train_log,
)

QUICK = [*TINY, "--max_iters=20", "--eval_interval=10", "--max_new_tokens=20"]
GREEK = ("Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν. Привет, мир! こんにちは世界。\n" * 2000).encode()


def test_a_sample_of_greek_text_prints_as_question_marks_in_a_windows_pipe_instead_of_crashing(tmp_path):
    # Windows encodes a redirected or piped output in its ANSI code page: cp1252 has no Greek, Cyrillic or kana
    (tmp_path / "input.txt").write_bytes(GREEK)
    assert run_script("gpt.py", QUICK, tmp_path).returncode == 0
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    command = [sys.executable, str(REPO / "gpt.py"), *on_the_cpu(["--sample", "--max_new_tokens=50"])]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, env=env, timeout=patience(120))
    assert result.returncode == 0, result.stderr.decode("cp1252")
    assert "--- sample 2 of 2 ---" in result.stdout.decode("cp1252") and b"?" in result.stdout
    assert "cp1252, and print as '?': set PYTHONUTF8=1 to see them" in result.stderr.decode("cp1252")
    assert result.stderr.count(b"PYTHONUTF8") == 1  # once, however many samples


def test_a_clock_that_ticks_every_16_ms_trains_and_reports_a_tiny_model(tmp_path):
    # time.time() on Windows (Python 3.10 to 3.12) moves in 15.6 ms ticks; a fast GPU step is shorter than that.
    # Here every clock gpt.py could read is made that coarse, so a step often measures 0 s
    (tmp_path / "sitecustomize.py").write_text(
        "import time\n"
        "for name in ('time', 'perf_counter', 'monotonic'):\n"
        "    exact = getattr(time, name)\n"
        "    setattr(time, name, lambda exact=exact: exact() // 0.0156 * 0.0156)\n"
    )
    (tmp_path / "input.txt").write_text((REPO / "input.txt").read_text()[:50_000])
    tiny = ["--n_layer=1", "--n_head=1", "--n_embd=8", "--block_size=8", "--batch_size=1", "--eval_iters=1"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    budget = f"--minutes={0.3 * patience_factor():.2g}"  # enough for 100 steps after start-up, on any machine
    for args in ([*tiny, "--max_iters=40"], [*tiny, budget, "--warmup_iters=10"]):
        command = [sys.executable, str(REPO / "gpt.py"), *on_the_cpu(args), "--max_new_tokens=5"]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=patience(300))
        assert result.returncode == 0, result.stderr
        assert "done in" in result.stdout and "about " in result.stdout  # the run and its time estimate


def test_a_checkout_with_windows_line_breaks_trains_exactly_as_the_text_with_unix_ones(tmp_path):
    # Git for Windows' default core.autocrlf turns input.txt's "\n" into "\r\n" (.gitattributes now says not to,
    # but a user's own text may come that way): Python's open() reads both as the same text, and so does gpt.py
    text = (REPO / "input.txt").read_text()[:100_000]
    unix, windows = tmp_path / "unix", tmp_path / "windows"
    for folder, line_break in ((unix, b"\n"), (windows, b"\r\n")):
        folder.mkdir()
        (folder / "input.txt").write_bytes(text.encode().replace(b"\n", line_break))
    runs = [run_script("gpt.py", [*QUICK, "--max_iters=10"], folder) for folder in (unix, windows)]
    assert all(run.returncode == 0 for run in runs), runs[1].stderr
    vocabulary = [re.search(r"\(([\d,]+)-token char vocabulary\)", run.stdout)[1] for run in runs]
    assert vocabulary[0] == vocabulary[1]  # no "\r" among the characters
    assert train_log(windows) == train_log(unix)
    assert (windows / "input.txt").read_bytes().count(b"\r\n") == text.count("\n")  # the user's text untouched


def test_gits_line_break_conversion_is_off_for_the_training_text():
    attributes = subprocess.run(["git", "check-attr", "text", "eol", "input.txt"], cwd=REPO, capture_output=True,
                                text=True)  # fmt: skip
    assert "input.txt: text: unset" in attributes.stdout


HOLD_THE_MODEL_OPEN = """
import os
real_replace = os.replace
def replace(source, target):  # as Windows answers when another program has the file open
    if str(target).endswith("trained_model.pth"):
        raise PermissionError(13, "Permission denied", str(target))
    return real_replace(source, target)
os.replace = replace
"""


def test_a_model_file_another_program_holds_open_gets_one_line_that_says_to_close_it(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "input.txt").write_text((REPO / "input.txt").read_text()[:100_000])
    assert run_script("gpt.py", QUICK, folder).returncode == 0
    before = snapshot(folder)
    (tmp_path / "launch.py").write_text(patched_gpt(HOLD_THE_MODEL_OPEN))
    result = subprocess.run([sys.executable, str(tmp_path / "launch.py"), *QUICK], cwd=folder, capture_output=True,
                            text=True, timeout=patience(300))  # fmt: skip
    error = one_line_error(result)
    assert "cannot write 'trained_model.pth' (Permission denied): close any program that has it open, or " in error
    after = snapshot(folder)
    assert after["trained_model.pth"] == before["trained_model.pth"]  # the earlier model is still there...
    assert after["trained_model.prev.pth"] == before["trained_model.pth"]  # ...and kept as the earlier run's
    assert not [name for name in after if name.endswith(".tmp")]


def test_windows_cleanup_never_sends_a_signal_and_removes_only_our_old_temporary_files(tmp_path, monkeypatch):
    # os.kill(pid, 0) is Windows' CTRL_C_EVENT: it would press Ctrl-C in a console, never ask. gpt.WINDOWS and a
    # stand-in os.kill are all that differ here; os.path.getmtime and os.remove are the real ones
    sent = []
    monkeypatch.setattr(gpt, "WINDOWS", True)
    monkeypatch.setattr(gpt.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    old, fresh = tmp_path / ".trained_model.pth.4242.gpt-abc123.tmp", tmp_path / ".train_log.csv.4343.gpt-x9.tmp"
    users = tmp_path / ".notes.4242.draft.tmp"  # a user's file with a name of the same shape, but not ours
    for path in (old, fresh, users):
        path.write_bytes(b"half a checkpoint")
    two_hours_ago = time.time() - 7200
    for path in (old, users):
        os.utime(path, (two_hours_ago, two_hours_ago))
    gpt.clean_stale_temps(str(tmp_path))
    assert sent == []
    assert not old.exists() and fresh.exists() and users.exists()


def test_commands_gpt_py_prints_on_windows_quote_a_path_with_a_space_as_cmd_and_powershell_read_it(monkeypatch):
    monkeypatch.setattr(gpt, "WINDOWS", True)
    command = gpt.resume_command("my runs\\m.pth", world_size=1)
    assert command.endswith(' --resume "--model_file=my runs\\m.pth"')
    assert subprocess.list2cmdline(["--resume", "--model_file=my runs\\m.pth"]) in command  # as Windows parses it


def test_pytorchs_out_of_memory_message_on_windows_gets_the_one_line_error(monkeypatch, capsys):
    # the words of PyTorch's CPU allocator on Windows (c10/core/impl/alloc_cpu.cpp), raised where a run would
    def main(argv: list[str]) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you "
                           "tried to allocate 31850496000 bytes.")  # fmt: skip

    monkeypatch.setattr(sys, "argv", ["gpt.py"])
    with pytest.raises(SystemExit) as stopped:
        gpt.run_command_line(main)
    assert stopped.value.code == 1 and capsys.readouterr().err == gpt.OUT_OF_MEMORY + "\n"


def test_settings_that_cannot_fit_are_refused_on_a_mac_too(monkeypatch):
    # /proc/meminfo is Linux's: on a Mac, all of the memory is the bound (it swaps rather than refuses). The Mac's
    # own call, sysconf, is the same function on Linux, so its answer can be checked against /proc/meminfo here
    monkeypatch.setattr(gpt.sys, "platform", "darwin")
    total = gpt.free_memory("cpu")
    with open("/proc/meminfo") as f:
        meminfo = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal"))
    assert abs(total - meminfo) < 0.01 * meminfo
    hp = gpt.Settings(n_layer=48, n_embd=16384, n_head=16)  # 150 billion weights
    hw = gpt.Hardware("cpu", torch.float32, None, "sdpa", False)
    with pytest.raises(gpt.UserError, match="but cpu has .* GB in all: lower --n_layer or --n_embd"):
        gpt.check_memory(hp, 65, hw)


def test_free_gpu_memory_is_asked_by_the_gpus_index_as_torch_2_4_requires(monkeypatch):
    # torch.cuda.mem_get_info('cuda') raises on torch 2.4 ("Expected a cuda device with a specified index"):
    # a stand-in with that rule, since no GPU is here
    def mem_get_info(device: object) -> tuple[int, int]:
        if not isinstance(device, int):
            raise ValueError("Expected a cuda device with a specified index or an integer")
        return (device + 1) * 10**9, 80 * 10**9

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    assert [gpt.free_memory(device) for device in ("cuda", "cuda:0", "cuda:3")] == [3 * 10**9, 10**9, 4 * 10**9]


@pytest.mark.parametrize(
    "windows, capability, has_triton, reason",
    [
        (False, (6, 1), True, "needs compute capability 7.0 or newer; this GPU has 6.1"),  # a GTX 10x0, a P100
        (True, (8, 6), False, "triton on a GPU, which has no official Windows build: use WSL2"),
        (False, (8, 0), False, "needs triton on a GPU (pip install triton)"),
        (False, (9, 0), True, ""),
    ],
)
def test_torch_compile_on_a_gpu_is_refused_with_the_reason_that_holds_there(
    monkeypatch, windows, capability, has_triton, reason
):
    # stand-ins for the GPU's answers: its compute capability and whether triton imports
    monkeypatch.setattr(gpt, "WINDOWS", windows)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr("torch.utils._triton.has_triton", lambda: has_triton)
    problem = gpt.compile_problem("cuda")
    assert (reason in problem) if reason else problem == ""


def test_torch_compile_on_a_windows_cpu_asks_for_visual_studios_compiler_not_gpp(monkeypatch):
    monkeypatch.setattr(gpt, "WINDOWS", True)
    monkeypatch.setattr(gpt.shutil, "which", lambda name: None if name == "cl" else f"/usr/bin/{name}")
    assert "Visual Studio's cl" in gpt.compile_problem("cpu")


def test_a_float32_run_builds_no_autocast_and_prints_no_warning(tmp_path):
    (tmp_path / "input.txt").write_text((REPO / "input.txt").read_text()[:100_000])
    result = run_script("gpt.py", [*QUICK, "--dtype=float32"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "autocast" not in result.stderr.lower()


def test_batches_are_copied_without_blocking_to_a_cuda_gpu_only(monkeypatch):
    # On Apple's GPUs a non-blocking copy from ordinary memory may read it after it is freed; only CUDA's copy from
    # page-locked memory is safe. No GPU is here: Tensor.to and pin_memory are stand-ins that record the calls
    calls = []
    monkeypatch.setattr(torch.Tensor, "to", lambda self, device, **kw: calls.append((device, kw)) or self)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append(("pinned", {})) or self)
    data = torch.arange(100).numpy().astype("uint16")
    for device in ("mps", "cpu", "cuda:0"):
        gpt.get_batch(data, torch.tensor([0, 5]), 8, device)
    assert calls == [("mps", {}), ("cpu", {}), ("pinned", {}), ("cuda:0", {"non_blocking": True})]


def test_fp16_with_a_gradient_scaler_trains_and_resumes_bit_for_bit_on_the_cpu(tmp_path):
    # GPUs without bf16 (T4, V100, ...) train in fp16 with a GradScaler; CPU autocast runs fp16 too, so that path,
    # the scaler's state in the resume file included, runs here
    run = [*TINY, "--max_iters=200", "--eval_interval=50", "--max_new_tokens=5", "--dtype=float16"]
    one_go, interrupted = tmp_path / "one_go", tmp_path / "interrupted"
    for folder in (one_go, interrupted):
        folder.mkdir()
        (folder / "input.txt").write_text((REPO / "input.txt").read_text()[:100_000])
    result = run_script("gpt.py", run, one_go)
    assert result.returncode == 0, result.stderr
    assert "cpu, float16: asked for with --dtype" in result.stdout
    ctrl_c(run, interrupted, after="step 10/")  # once training has begun
    assert run_script("gpt.py", ["--resume"], interrupted).returncode == 0
    expected, got = (gpt.load_checkpoint(str(f / "trained_model.resume.pth"), "cpu") for f in (one_go, interrupted))
    assert all(torch.equal(expected["model"][name], got["model"][name]) for name in expected["model"])
    assert train_log(interrupted) == train_log(one_go)
    assert got["scaler"]["scale"] > 0  # the scaler ran, and its state was saved and restored


NAN_IN_RANK_1 = """
import os, torch
if os.environ["RANK"] == "1":  # from its 8th training step on, rank 1's loss is nan
    cross_entropy, calls = torch.nn.functional.cross_entropy, []
    def poisoned(logits, targets, **options):
        loss = cross_entropy(logits, targets, **options)
        calls.extend([1] if torch.is_grad_enabled() else [])
        return loss * float("nan") if len(calls) >= 8 else loss
    torch.nn.functional.cross_entropy = poisoned
"""


def test_one_torchrun_process_whose_loss_goes_nan_stops_every_process_with_the_reason(tmp_path):
    # each process checked only its own loss: the other ones went on into the next step's gradient exchange and
    # waited there (on GPUs until NCCL's watchdog, about ten minutes). Now all of them stop at the same step
    (tmp_path / "input.txt").write_text((REPO / "input.txt").read_text()[:100_000])
    (tmp_path / "launch.py").write_text(patched_gpt(NAN_IN_RANK_1))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
               str(tmp_path / "launch.py"), *TINY, "--max_iters=30", "--eval_interval=10"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=patience(300))
    assert result.returncode != 0
    said = re.findall(r"error: the loss became (.*) at step (\d+): the run diverged", result.stderr)
    assert sorted(said) == [("nan", "8"), ("not finite in another process", "8")], result.stderr


def test_file_names_that_are_not_utf8_are_shown_and_never_stop_the_run(tmp_path):
    # a Latin-1 byte in a name, as old archives and USB sticks give: Python holds it as a lone surrogate, which a
    # strict UTF-8 output cannot encode
    text, model = os.fsencode(tmp_path) + b"/caf\xe9.txt", os.fsencode(tmp_path) + b"/mod\xe8le.pth"
    with open(text, "wb") as f:
        f.write((REPO / "input.txt").read_bytes()[:100_000])
    args = [*QUICK, f"--input_file={os.fsdecode(text)}", f"--model_file={os.fsdecode(model)}", "--device=cpu"]
    command = [os.fsencode(sys.executable), os.fsencode(REPO / "gpt.py"), *map(os.fsencode, args)]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # strict, as under a en_US.UTF-8 locale
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, env=env, timeout=patience(300))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"tokens of " in result.stdout and os.path.exists(model)


def reads_of_the_loss(hp: gpt.Settings, device: str, plain_every: int, steps: int = 200) -> list[int]:
    """The steps after which Run.stepped reads the loss (and so asks every torchrun process) on device."""
    run = gpt.Run.__new__(gpt.Run)  # only what stepped reads; no files, no model
    run.hp, run.hw, run.start_step = hp, gpt.Hardware(device, None, None, "sdpa", False), 0
    run.pending, run.step_seconds, run.plain_every, reads = [], [], plain_every, []

    def read_losses(step: int) -> None:  # as Run.read_losses, less the reading: the steps are measured
        reads.append(step)
        run.step_seconds += [0.01] * len(run.pending)
        run.pending.clear()

    run.read_losses = read_losses
    for step in range(steps):
        run.stepped(step, torch.tensor(1.0), 1e-3)
    return reads


def test_on_gpus_every_torchrun_process_reads_the_loss_after_the_same_steps_whether_or_not_it_prints():
    # only rank 0 prints the plain progress lines (when its output is piped); each read asks every process whether
    # a loss went bad, so a read only rank 0 made would pair with the others' next gradient exchange and hang
    hp = gpt.Settings(max_iters=200, eval_interval=25, sample_interval=25)
    assert reads_of_the_loss(hp, "cuda:0", plain_every=5) == reads_of_the_loss(hp, "cuda:0", plain_every=0)
    assert reads_of_the_loss(hp, "cuda:0", plain_every=0)[:5] == [0, 9, 19, 24, 29]  # every 10, and before pauses
    assert reads_of_the_loss(hp, "cpu", plain_every=5) == list(range(200))  # a CPU has nothing to wait for


def test_minutes_on_a_gpu_fits_the_steps_at_the_end_of_the_warm_up_it_measured():
    # the printed flags rerun the same run only if the fit comes while the learning rate is still warming up
    unfitted = dict.fromkeys(gpt.FITTED, gpt.UNFITTED)
    hp = gpt.Settings(**unfitted, minutes=1, warmup_iters=15)
    assert 14 in reads_of_the_loss(hp, "cuda:0", plain_every=0, steps=40)  # the 15th step: all 15 measured


def test_commands_printed_on_windows_quote_what_cmd_and_powershell_would_split_on(monkeypatch):
    monkeypatch.setattr(gpt, "WINDOWS", True)
    assert gpt.quote("--model_file=C:\\R&D\\m.pth") == '"--model_file=C:\\R&D\\m.pth"'
    assert gpt.quote("--model_file=runs\\m.pth") == "--model_file=runs\\m.pth"  # nothing to protect


def test_a_python_not_on_the_path_is_named_by_its_whole_path_in_printed_commands(monkeypatch):
    # a virtual environment run as .venv/bin/python gpt.py, not activated: 'python' would be another Python
    monkeypatch.setattr(gpt.shutil, "which", lambda name: "/usr/bin/" + name)
    assert gpt.python_command() == gpt.quote(sys.executable)
