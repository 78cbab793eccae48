"""Precision, compile and torchrun: the hardware choices, and one clear line when one cannot work here."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import TINY, patched_gpt, patience, run_script, train_log
from gpt import good_dtypes

# what torchrun sets for a one-process run (the tests stop before any process connects)
TORCHRUN_ENV = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"}
SHORT = [*TINY, "--max_iters=30", "--eval_interval=10", "--num_samples=1", "--max_new_tokens=5"]


def run_patched(patch: str, args: list[str], cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run gpt.py as `python gpt.py args`, after patch has made this machine look like another one."""
    return subprocess.run([sys.executable, "-c", patched_gpt(patch), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=patience(300), env={**os.environ, **(env or {})})  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_compiled_training_follows_the_eager_loss_curve(shakespeare, tmp_path):
    # a gentle learning rate: at TINY's 1e-2 the loss leaves its first plateau at a step that
    # float rounding alone can move, and the curves part for reasons that are not compile's
    gentle = [*SHORT, "--learning_rate=3e-3", "--min_lr=3e-4"]
    eager = run_script("gpt.py", gentle, shakespeare)
    assert eager.returncode == 0, eager.stderr
    compiled_dir = tmp_path / "compiled"
    compiled_dir.mkdir()
    (compiled_dir / "input.txt").write_bytes((shakespeare / "input.txt").read_bytes())
    compiled = run_script("gpt.py", [*gentle, "--compile=True"], compiled_dir)
    assert compiled.returncode == 0, compiled.stderr
    assert "compiling the training step" in compiled.stdout
    # the same math, fused into other kernels: float rounding differs, the curve does not
    for a, b in zip(train_log(shakespeare), train_log(compiled_dir), strict=True):
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) < 0.02


def test_compile_without_a_cpp_compiler_is_refused_in_one_line(shakespeare):
    no_compiler = {"PATH": str(shakespeare), "CXX": ""}  # a PATH with no g++ or clang++ on it
    result = run_patched("pass", [*SHORT, "--compile=True"], shakespeare, no_compiler)
    assert_one_line_error(result, "--compile=True cannot work here: torch.compile turns the model into C++ on a CPU")
    assert not (shakespeare / "trained_model.pth").exists()


TWO_GPUS = "import torch; torch.cuda.is_available = lambda: True; torch.cuda.device_count = lambda: 2"


def test_cpu_0_is_the_cpu_with_the_same_precision_and_attention(shakespeare):
    args = [*SHORT, "--max_iters=0", "--max_new_tokens=1"]
    plain, numbered = (run_script("gpt.py", [*args, f"--device={d}"], shakespeare) for d in ("cpu", "cpu:0"))
    assert numbered.returncode == 0, numbered.stderr
    setup = [
        [line for line in result.stdout.splitlines() if line.startswith(("cpu", "model:"))]
        for result in (plain, numbered)
    ]
    assert setup[1] == setup[0]  # 'cpu, bfloat16: ...' here, not the 'safe choice' gpt.py makes for unknown devices


def test_a_gpu_number_this_machine_lacks_is_refused_with_the_ones_it_has(shakespeare):
    result = run_patched(TWO_GPUS, [*SHORT, "--device=cuda:2"], shakespeare)
    assert_one_line_error(result, "--device=cuda:2: this machine's GPUs are cuda:0 to cuda:1")
    assert not (shakespeare / "train_log.csv").exists()


def test_a_named_gpu_is_the_one_asked_which_precision_it_does_well(shakespeare):
    # two GPUs, and only cuda:1 has bf16; torch.cuda.is_bf16_supported asks the current GPU
    patch = TWO_GPUS + "; gpu = [0]; torch.cuda.set_device = lambda d: gpu.__setitem__(0, torch.device(d).index)"
    patch += "; torch.cuda.is_bf16_supported = lambda including_emulation=True: gpu[0] == 1"
    result = run_patched(patch, [*SHORT, "--device=cuda:1", "--sample"], shakespeare)  # stops: no model to sample
    assert "cuda:1, bfloat16: this GPU supports bf16" in result.stdout, result.stderr


def test_a_gpu_that_only_emulates_bf16_trains_in_float16_with_a_scaler(monkeypatch):
    # a T4 or V100: bf16 tensors work, but without bf16 matmul units they are slow
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert next(iter(good_dtypes("cuda"))) == "float16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert next(iter(good_dtypes("cuda"))) == "bfloat16"


def test_torchrun_on_an_apple_gpu_is_refused_with_what_to_use(shakespeare):
    mps_only = "import torch; torch.cuda.is_available = lambda: False; torch.backends.mps.is_available = lambda: True"
    result = run_patched(mps_only, [*SHORT, "--device=auto"], shakespeare, TORCHRUN_ENV)  # auto: what picks mps
    assert_one_line_error(result, "torchrun cannot connect processes on Apple GPUs (mps): add --device=cpu")


NO_NATIVE_BF16 = "import torch; torch.cpu._is_avx512_bf16_supported = torch.cpu._is_amx_tile_supported = lambda: False"


def test_a_cpu_without_native_bf16_trains_in_float32_and_refuses_bfloat16(shakespeare):
    auto = run_patched(NO_NATIVE_BF16, [*SHORT, "--device=cpu"], shakespeare)
    assert auto.returncode == 0, auto.stderr
    assert "cpu, float32: this CPU has no native bf16 matmul" in auto.stdout
    asked = run_patched(NO_NATIVE_BF16, [*SHORT, "--device=cpu", "--dtype=bfloat16"], shakespeare)
    assert_one_line_error(asked, "this cpu cannot do bfloat16 well: use --dtype=float32, float16 or auto")


@pytest.mark.parametrize(
    "patch",
    [
        "import torch.distributed; torch.distributed.is_gloo_available = lambda: False",
        "import torch.distributed; torch.distributed.is_available = lambda: False",
    ],
)
def test_torchrun_without_a_backend_says_so_in_one_line(shakespeare, patch):
    result = run_patched(patch, SHORT, shakespeare, TORCHRUN_ENV)
    assert_one_line_error(result, "this PyTorch cannot connect processes with gloo")
