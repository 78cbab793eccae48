"""Does gpt.py work on this machine? Six checks, and one table to paste into a bug report.

    python bench/check.py                  # on the device gpt.py picks: CUDA, else an Apple GPU (mps), else the CPU
    python bench/check.py --device=cpu     # or name one: cpu, cuda, cuda:1, mps
    python bench/check.py --quick          # fewer timed steps and matmuls in the speed row
    python3 bench/check.py                 # on macOS, where the command is python3

It runs gpt.py as a user does, as whole processes in a temporary folder holding the first 200,000 characters of
input.txt, with a tiny model (2 layers of 64, context 64, 40 steps), and checks that

1. train: a run ends and saves trained_model.pth;
2. stop and resume, bit for bit: a run stopped with Ctrl-C after its evaluation at step 10 and continued with
   `--resume` ends with the same train_log.csv and the same weights as the run left alone (on Windows, where a
   Ctrl-C cannot be sent to another process, the run ends at step 10 and trains on with --resume --max_iters=40);
3. sample: `--sample` prints text from the saved model;
4. fp16 with a gradient scaler: a run trains in fp16 with gpt.py's gradient scaler (its loss scale is saved): the
   run gpt.py picks itself on a GPU without bf16, else one with --dtype=float16 where gpt.py takes it;
5. torchrun, 2 processes: on two GPUs (NCCL), or as two CPU processes (gloo) where there are not two GPUs;
6. speed: tokens/s of gpt.py's own training step (train_step, then update_average, on random tokens), and the
   share of the device's peak it uses, the peak being a large matmul timed here (bench/train.py's method).

It prints what the machine is (system, Python, torch and its build, CPU, GPUs, the precision gpt.py picks) and then
one Markdown table: each row ok, FAILED with the reason in one line, or skipped with why. Paste everything it printed
to stdout, from "- system" to the table's last row, into the bug report (a GitHub issue renders the table).
While it runs, stderr says which check it is on. Exit code 0 if no row FAILED, 1 otherwise.
"""

import argparse
import collections
import contextlib
import copy
import csv
import io
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gpt  # noqa: E402
from machine import cpu_name, load_average  # noqa: E402
from train import SIZES, matmul_gflops, synchronize  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GPT_PY = REPO / "gpt.py"
TEXT_CHARS = 200_000  # of input.txt: a few seconds to tokenize anywhere
STEPS = 40
STOP_AFTER = 10  # the evaluation after which the interrupted run gets its Ctrl-C
# The warm-up ends where the interrupted run stops: on Windows that run ends there with --max_iters=10 and trains
# on, and only a warm-up's learning rate does not depend on --max_iters (its cosine decay does).
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64", "--batch_size=16", "--eval_iters=4",
        f"--eval_interval={STOP_AFTER}", f"--warmup_iters={STOP_AFTER}", "--max_new_tokens=20"]  # fmt: skip
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
TIMEOUT = 600  # seconds, for one gpt.py process: a tiny run takes seconds, its first compile (CUDA) a minute
# gpt.py's output as it is printed (so that a Ctrl-C can follow a line), and in UTF-8 on every system
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
TEXT = dict(text=True, encoding="utf-8", errors="replace")


class Failed(Exception):
    """A check that ran and found something wrong; its message is the row's one-line reason."""


class Skipped(Exception):
    """A check that cannot run on this machine; its message says why."""


def gpt_py(args: list[str], folder: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python gpt.py args` (or `launcher gpt.py args`) in folder, to its end."""
    command = [*(launcher or [sys.executable]), str(GPT_PY), *args]
    return subprocess.run(command, cwd=folder, env=ENV, capture_output=True, timeout=TIMEOUT, **TEXT)


def last_words(output: str) -> str:
    """What a failed run said last: its one-line error if it printed one, else its last line."""
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(nothing)"])[-1][:300]


def check_ran(result: subprocess.CompletedProcess, folder: Path, what: str) -> None:
    """Failed unless the run exited with 0 and left its model in folder."""
    if result.returncode != 0:
        raise Failed(f"{what} exited with {result.returncode}: {last_words(result.stderr or result.stdout)}")
    if not (folder / "trained_model.pth").exists():
        raise Failed(f"{what} exited with 0 but left no trained_model.pth")


def write_text(folder: Path) -> Path:
    """folder, made, holding input.txt: the first TEXT_CHARS characters of the repository's, byte for byte."""
    folder.mkdir(parents=True)
    text = (REPO / "input.txt").read_text(encoding="utf-8")[:TEXT_CHARS]
    (folder / "input.txt").write_bytes(text.encode("utf-8"))  # (write_text would make Windows line ends)
    return folder


def train_log(folder: Path) -> list[dict]:
    """train_log.csv's rows without the wall-clock column, which differs from run to run."""
    with open(folder / "train_log.csv", newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(f)]


def val_losses(folder: Path) -> str:
    """The run's val loss at its first evaluation and at its last."""
    rows = train_log(folder)
    return ", ".join(f"{float(row['val_loss']):.2f} at step {row['step']}" for row in (rows[0], rows[-1]))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights trained_model.pth keeps (the best averaged ones), loaded as gpt.py loads them."""
    return torch.load(folder / "trained_model.pth", map_location="cpu", weights_only=True)["model"]


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max |a - b| over every weight; infinite if the two do not hold the same tensors."""
    if a.keys() != b.keys() or any(a[name].shape != b[name].shape for name in a):
        return float("inf")
    return max((a[name].double() - b[name].double()).abs().max().item() for name in a if a[name].numel())


def stop_with_ctrl_c(args: list[str], folder: Path) -> int:
    """Run gpt.py in folder, press Ctrl-C once it has evaluated step STOP_AFTER; the step it says it stopped at."""
    process = subprocess.Popen([sys.executable, str(GPT_PY), *args], cwd=folder, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, **TEXT)  # fmt: skip
    printed = []
    try:
        for line in process.stdout:
            printed.append(line)
            if line.startswith(f"step {STOP_AFTER}:"):  # "step 10: train loss ..., val loss ..."
                process.send_signal(signal.SIGINT)  # as Ctrl-C in its terminal would
                break
        printed.append(process.communicate(timeout=TIMEOUT)[0])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(printed)
    stopped = re.search(r"interrupted at step (\d+)", output)
    if process.returncode == 0:
        raise Failed(f"the run to be interrupted ended all {STEPS} steps before the Ctrl-C reached it")
    if process.returncode != 130 or not stopped:
        raise Failed(f"Ctrl-C after step {STOP_AFTER}'s evaluation: exit code {process.returncode}, "
                     f"{last_words(output)}")  # fmt: skip
    return int(stopped[1])


def quietly(function, *args):
    """function(*args) with what it prints kept: (its result, its output)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        return function(*args), printed.getvalue().strip()


def flop_rate(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:,.2f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:,.0f} GFLOP/s"


class SelfCheck:
    """The checks, one method each, on one device; the runs they share live in one scratch folder."""

    def __init__(self, device: str, scratch: Path, quick: bool) -> None:
        self.device, self.scratch, self.quick = device, scratch, quick
        self.kind = device.split(":")[0]  # 'cuda:1' -> 'cuda'
        self.args = [*TINY, f"--device={device}"]
        self.left_alone, self.seconds = None, 0.0  # the 40-step run in folder A once it has run, and its wall time

    def one_go(self) -> Path:
        """Folder A, where gpt.py trains STEPS steps in one go: the train row, and what the others build on."""
        folder = self.scratch / "A"
        if self.left_alone is None:
            start = time.perf_counter()
            self.left_alone = gpt_py([*self.args, f"--max_iters={STEPS}"], write_text(folder))
            self.seconds = time.perf_counter() - start
        check_ran(self.left_alone, folder, "python gpt.py")
        return folder

    def train(self) -> str:
        folder = self.one_go()
        return f"{STEPS} steps, {self.seconds:.0f} s in all; val loss {val_losses(folder)}"

    def resume(self) -> str:
        one_go, stopped = self.one_go(), write_text(self.scratch / "B")
        if sys.platform == "win32":  # no Ctrl-C for another process: end at step STOP_AFTER, then train on
            check_ran(gpt_py([*self.args, f"--max_iters={STOP_AFTER}"], stopped), stopped, f"{STOP_AFTER} steps")
            how, more = f"ended at step {STOP_AFTER} of {STEPS} (Windows: no Ctrl-C)", [f"--max_iters={STEPS}"]
        else:
            step = stop_with_ctrl_c([*self.args, f"--max_iters={STEPS}"], stopped)
            how, more = f"stopped by Ctrl-C at step {step} of {STEPS}", []
        check_ran(gpt_py(["--resume", f"--device={self.device}", *more], stopped), stopped, "--resume")
        log, expected_log = train_log(stopped), train_log(one_go)
        got, expected = weights(stopped), weights(one_go)
        same_weights = got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
        if log == expected_log and same_weights:
            return f"{how}, resumed: {len(log)} log rows and {len(got)} weight tensors the same as in one go"
        steps = [row.get("step") for row, expected_row in zip(log, expected_log) if row != expected_row]
        rows = f"log rows differ at steps {', '.join(steps)}" if steps else "the log rows are the same"
        rows = f"{len(log)} log rows, not {len(expected_log)}" if len(log) != len(expected_log) else rows
        why = f" (on {self.kind}, kernels may add in a different order each run)" if self.kind != "cpu" else ""
        raise Failed(f"{how}, resumed: weights differ by max |Δ| = {largest_difference(got, expected):.3g}; "
                     f"{rows}{why}")  # fmt: skip

    def sample(self) -> str:
        result = gpt_py(["--sample", "--max_new_tokens=50", f"--device={self.device}"], self.one_go())
        if result.returncode != 0:
            raise Failed(f"--sample exited with {result.returncode}: {last_words(result.stderr)}")
        samples = re.split(r"--- sample \d+ of \d+ ---\n", result.stdout)[1:]
        if not any(sample.strip() for sample in samples):
            raise Failed(f"--sample exited with 0 but printed no text: {last_words(result.stdout)}")
        return f"{len(samples)} samples, {sum(len(s.strip()) for s in samples)} characters"

    def fp16(self) -> str:
        """fp16 with its gradient scaler, on a device gpt.py trains in fp16: the scaler's state shows it ran."""
        auto, _ = gpt.pick_dtype(self.device, "auto")
        if auto == torch.float16:  # a GPU without bf16: gpt.py chose fp16 itself, and the train row ran it
            folder, how = self.one_go(), "the train row's run (gpt.py picks fp16 here: no bf16)"
        elif "float16" in gpt.good_dtypes(self.device):
            folder, how = write_text(self.scratch / "fp16"), "--dtype=float16"
            check_ran(gpt_py([*self.args, f"--max_iters={STEPS}", "--dtype=float16"], folder), folder, how)
        else:
            good = ", ".join(gpt.good_dtypes(self.device))
            raise Skipped(f"gpt.py does not train fp16 on {self.kind} (it takes --dtype={good} or auto)")
        scaler = torch.load(folder / "trained_model.resume.pth", map_location="cpu", weights_only=True)["scaler"]
        if "scale" not in scaler:
            raise Failed(f"{how} trained, but without a gradient scaler (its saved state is {scaler})")
        return f"{how}: loss scale {float(scaler['scale']):g} after {STEPS} steps; val loss {val_losses(folder)}"

    def torchrun(self) -> str:
        if self.kind == "mps":
            raise Skipped("gpt.py refuses torchrun on Apple GPUs (mps): processes there cannot be connected")
        gpus = torch.cuda.device_count() if self.kind == "cuda" else 0
        if gpus >= 2:
            on, how = "cuda", "2 GPUs (NCCL)"
        else:
            on, how = "cpu", "2 CPU processes (gloo)" + (": this machine has 1 GPU" if gpus == 1 else "")
        folder = write_text(self.scratch / "torchrun")
        result = gpt_py([*TINY, f"--max_iters={STEPS}", f"--device={on}"], folder, launcher=TORCHRUN)
        check_ran(result, folder, "torchrun --nproc_per_node=2 gpt.py")
        return f"{how}: val loss {val_losses(folder)}"

    def speed(self) -> str:
        """gpt.py's step at a fixed shape, timed as bench/train.py times it, against a matmul peak timed here."""
        label, shape, batch = SIZES["cpu" if self.kind == "cpu" else "baby"]  # a GPU idles on the CPU's shape
        hw, _ = quietly(gpt.pick_hardware, gpt.Settings(device=self.device, block_size=shape["block_size"]))
        warmup, steps = (1, 3) if self.quick else (2, 10)
        torch.manual_seed(0)
        config = gpt.GPTConfig(**shape, attention=hw.attention, gelu=gpt.Hyperparameters().gelu)
        model = gpt.GPT(config).to(hw.device)
        hp = gpt.Hyperparameters()  # AdamW, its clipping and the moving average, as gpt.py trains
        optimizer = gpt.make_optimizer(model, hp, hw.fused_adamw)
        train_model = gpt.with_chunked_loss(model)  # eager: as gpt.py with --compile=False
        averaged = copy.deepcopy(model).requires_grad_(False)
        scaler = torch.amp.GradScaler(hw.device_type, enabled=hw.dtype == torch.float16)
        tokens = torch.randint(config.vocab_size, (batch, config.block_size + 1), device=hw.device)
        x, y = tokens[:, :-1], tokens[:, 1:]  # (B, T) each; made once, so the clock sees only the step
        times = []
        for step in range(warmup + steps):
            synchronize(hw.device)
            start = time.perf_counter()
            gpt.train_step(train_model, optimizer, scaler, [(x, y)], hp.grad_clip, hw.autocast)
            gpt.update_average(averaged, model, step, hp.ema_decay)
            synchronize(hw.device)
            times.append(time.perf_counter() - start)
        tokens_per_s = batch * config.block_size / statistics.median(times[warmup:])
        # nanoGPT's count, as bench/train.py: 6 FLOPs per parameter per token, plus attention's
        flops_per_token = 6 * model.num_params() + 12 * config.n_layer * config.block_size * config.n_embd
        n = {"cpu": 2048, "mps": 4096}.get(self.kind, 8192)  # big enough to keep the device busy
        repeats = 3 if self.quick else 10
        dtype = str(hw.dtype).removeprefix("torch.")
        peak = matmul_gflops(hw.dtype, n, repeats, hw.device)[0] * 1e9
        achieved = tokens_per_s * flops_per_token
        return (f"{tokens_per_s:,.0f} tokens/s ({label}, {model.num_params() / 1e6:.1f}M parameters, "
                f"{batch} x {config.block_size} tokens a step, {dtype}, eager, median of {steps} steps) = "
                f"{flop_rate(achieved)}, {achieved / peak:.0%} of {flop_rate(peak)} (peak = measured large matmul: "
                f"best of {repeats} {n} x {n} in {dtype})")  # fmt: skip


ROWS = {  # what the table calls each check: SelfCheck's method
    "train": "train",
    "stop and resume, bit for bit": "resume",
    "sample": "sample",
    "fp16 with a gradient scaler": "fp16",
    "torchrun, 2 processes": "torchrun",
    "speed": "speed",
}


def run_row(check: SelfCheck, name: str) -> tuple[str, str]:
    """(result, detail) of one check: one that raises anything FAILED, with the reason in one line."""
    print(f"{name} ...", end=" ", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        result, detail = "ok", getattr(check, ROWS[name])()
    except Skipped as e:
        result, detail = "skipped", str(e)
    except Failed as e:
        result, detail = "FAILED", str(e)
    except Exception as e:  # a bug of the check's or of gpt.py's: say what it was, and go on with the next row
        result, detail = "FAILED", f"{type(e).__name__}: {e}"
    print(f"{result} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return result, " ".join(detail.split()).replace("|", "\\|")  # one line, and no cell ends early


def git_version() -> str:
    """The commit gpt.py's checkout is at, and whether it has changes; '' when git cannot tell."""
    try:
        ask = dict(cwd=REPO, capture_output=True, text=True, timeout=10)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **ask).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **ask).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit and f"commit {commit}" + (", with local changes" if changed else "")


def describe(device: str, asked: str) -> list[str]:
    """The machine, as a bug report needs it: system, Python, torch and its build, CPU, GPUs, gpt.py's choices."""
    gpus = "none"
    if torch.cuda.is_available():
        names = collections.Counter(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        gpus = ", ".join(f"{count} x {name}" for name, count in names.items())
    elif torch.backends.mps.is_available():
        gpus = "Apple GPU (mps)"
    _, chosen = quietly(gpt.pick_hardware, gpt.Settings(device=device))  # "cpu, bfloat16: this CPU ..."
    return [
        f"system: {platform.platform()}",
        f"Python: {platform.python_version()} ({platform.python_implementation()})",
        f"torch: {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}), "
        f"MPS available: {torch.backends.mps.is_available()}, {torch.get_num_threads()} threads",
        f"CPU: {cpu_name()}, {os.cpu_count()} logical cores",
        f"GPU: {gpus}",
        f"device: {device} (--device={asked}); gpt.py picks {chosen}",
        f"gpt.py: {git_version() or 'not a git checkout'}",
        f"load average before the checks: {busy()}",
    ]


def busy() -> str:
    """The load average, and what it means for the speed row (as bench/train.py says it)."""
    load = load_average()  # runnable processes, averaged over the last minute; the checks have not started yet
    if load is None:
        return "- (this system keeps none)"
    other_work = " -- other work has been using these cores: if it still is, the speed row is not reliable"
    return f"{load:.2f}" + (other_work if load > 0.5 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (as gpt.py: cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps and matmuls in the speed row")
    args = parser.parse_args()
    try:
        device = gpt.pick_device(args.device)
    except gpt.UserError as e:
        parser.error(str(e))
    began = time.perf_counter()
    for line in describe(device, args.device):
        print(f"- {line}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpt-check-", ignore_cleanup_errors=True) as scratch:
        check = SelfCheck(device, Path(scratch), args.quick)
        rows = [(name, *run_row(check, name)) for name in ROWS]
    print("\n| check | result | detail |")
    print("| --- | --- | --- |")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    print(f"\n(the check took {(time.perf_counter() - began) / 60:.1f} minutes)")
    sys.exit(1 if any(result == "FAILED" for _, result, _ in rows) else 0)


if __name__ == "__main__":
    main()
