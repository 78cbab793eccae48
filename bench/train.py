"""Training speed at up to four model sizes, with each speed feature switched off in turn, in one run.

    python bench/train.py                           # cpu recipe, baby GPT and GPT-2 124M: a few minutes
    python bench/train.py --sizes=cpu --steps=3     # a quick look
    python bench/train.py --sizes=cpu,default       # the two shapes --minutes picks on a CPU
    python bench/train.py --compile --gpt2_memory   # add torch.compile rows, and GPT-2's memory at context 1024

A step is gpt.py's own: train_step (forward under autocast, backward, clip the gradient norm, AdamW
step from gpt.make_optimizer, zero the gradients), then update_average (the moving average of the
weights that gpt.py evaluates and keeps, in a copy of the model). The tokens are random: speed does not depend on
what the model reads. Every configuration runs in a fresh Python process, so its peak RSS is its own;
the warm-up steps are left out and the median of the timed steps is reported.
"""

import argparse
import copy
import datetime
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gpt  # noqa: E402
from machine import cpu_name, load_average, peak_rss_bytes  # noqa: E402

# name: (what the table calls it, GPTConfig fields, batch size)
SIZES = {
    "cpu": ("cpu recipe", dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128), 32),
    "default": ("gpt.py's CPU default", dict(vocab_size=65, block_size=128, n_layer=4, n_head=6, n_embd=192), 32),
    "baby": ("baby GPT", dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384), 16),
    "gpt2": ("GPT-2 124M", dict(vocab_size=50257, block_size=128, n_layer=12, n_head=12, n_embd=768), 4),
}
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
GELU = gpt.Hyperparameters().gelu  # the MLP's GELU in a model trained from scratch
# A variant is the speed features a configuration uses. The baseline every speed-up divides by is the
# same model in plain fp32 eager PyTorch: SDPA, AdamW as PyTorch makes it on a CPU (not fused), and
# the C library's memory settings as they come.
FEATURES = ("dtype", "attention", "compile", "gelu", "fused", "keep_memory", "optimizer")
FP32_EAGER = dict(
    dtype="float32", attention="SDPA", compile=False, gelu=GELU, fused=False, keep_memory=False, optimizer="adamw"
)


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MB (10^6 bytes); None where the system will not say (Windows)."""
    peak = peak_rss_bytes()
    return None if peak is None else peak / 1e6


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def measure(job: dict) -> dict:
    """Train one configuration for warmup + steps steps in this (fresh) process: step times and peak memory."""
    rss_at_start = peak_rss_mb()  # Python + torch + gpt.py, before any model exists
    if job["keep_memory"]:
        gpt.keep_freed_memory()
    torch.manual_seed(0)
    attention = "by_hand" if job["attention"] == "by hand" else "sdpa"
    config = gpt.GPTConfig(**job["config"], attention=attention, gelu=job["gelu"])
    model = gpt.GPT(config)
    hp = gpt.Hyperparameters(optimizer=job["optimizer"])  # muon: Muon on the blocks' matrices, AdamW on the rest
    optimizer = gpt.make_optimizer(model, hp, fused=job["fused"])
    train_model = gpt.with_chunked_loss(model)  # as gpt.py: GPT-2's vocabulary takes its loss in chunks
    train_model = torch.compile(train_model) if job["compile"] else train_model  # as gpt.py: the training path
    averaged = copy.deepcopy(model).requires_grad_(False)  # as gpt.py: the moving average of the weights
    dtype = getattr(torch, job["dtype"])
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
    tokens = torch.randint(config.vocab_size, (job["batch"], config.block_size + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]  # (B, T) each; made once, so the clock sees only the step
    times = []
    scaler = torch.amp.GradScaler("cpu", enabled=False)  # as gpt.py: no loss scaling for bf16 or fp32
    for step in range(job["warmup"] + job["steps"]):
        start = time.perf_counter()
        loss = gpt.train_step(train_model, optimizer, scaler, [(x, y)], hp.grad_clip, autocast)  # gpt.py's own step
        gpt.update_average(averaged, model, step, hp.ema_decay)
        loss.item()  # CPU work is done when a call returns; on a GPU this would be the synchronisation
        times.append(time.perf_counter() - start)
    return {"params": model.num_params(), "times": times, "rss_mb": peak_rss_mb(), "rss_at_start_mb": rss_at_start}


def in_fresh_process(job: dict) -> dict:
    """measure(job) in a new Python process, so its peak RSS belongs to this configuration alone."""
    done = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{job} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def synchronize(device: str) -> None:
    """Wait for the work queued on a GPU, so that the clock read next sees it done; a CPU's is done on return."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def matmul_gflops(dtype: torch.dtype, n: int, repeats: int, device: str = "cpu") -> tuple[float, float]:
    """Best and median GFLOP/s of an (n, n) @ (n, n) matmul (2 n^3 FLOPs), after 2 untimed warm-ups."""
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    times = []
    for _ in range(2):
        a @ b
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9, 2 * n**3 / statistics.median(times) / 1e9


def default_variant(auto: str, block_size: int) -> dict:
    """What gpt.py runs on this CPU: its dtype, attention and GELU, eager, fused AdamW, freed memory kept."""
    attention = (
        "by hand" if gpt.pick_attention("auto", "cpu", getattr(torch, auto), block_size) == "by_hand" else "SDPA"
    )
    return dict(
        dtype=auto, attention=attention, compile=False, gelu=GELU, fused=True, keep_memory=True, optimizer="adamw"
    )


def other_attention(variant: dict) -> str:
    return "SDPA" if variant["attention"] == "by hand" else "by hand"


def key(variant: dict) -> tuple:
    return tuple(variant[name] for name in FEATURES)


def plan(args: argparse.Namespace, auto: str) -> list[dict]:
    """Every configuration to measure: per size the fp32 baseline, gpt.py's default, then each speed feature off."""
    other_gelu = "tanh" if GELU != "tanh" else "exact"
    jobs = []
    for size in args.sizes.split(","):
        label, config, batch = SIZES[size]
        steps = args.gpt2_steps if size == "gpt2" else args.steps
        if size == "gpt2":
            config, label = {**config, "block_size": args.gpt2_context}, f"{label}, context {args.gpt2_context}"
        default = default_variant(auto, config["block_size"])  # gpt.py's attention depends on the context
        other = other_attention(default)
        variants = [  # (features, note): the baseline, gpt.py's default, then the default with one feature changed
            (FP32_EAGER, "baseline: plain fp32 eager"),
            (default, "gpt.py's default here"),
            ({**default, "attention": other}, f"default with {other} attention"),
            ({**default, "dtype": "float32"}, "default without bf16"),
            ({**default, "fused": False}, "default without fused AdamW"),
            ({**default, "keep_memory": False}, "default without keeping freed memory"),
            ({**default, "gelu": other_gelu}, f"default with the {other_gelu} GELU"),
            ({**default, "optimizer": "muon"}, "default with --optimizer=muon"),
        ]
        if args.compile:  # gpt.py --compile=true, then without bf16, then with the other attention
            compiled = {**default, "compile": True}
            variants += [(compiled, "default + compile"), ({**compiled, "dtype": "float32"}, "compiled, without bf16")]
            variants.append(({**compiled, "attention": other}, f"compiled, with {other} attention"))
        unique = {}  # on a CPU without bf16 some variants coincide: keep each one's first name
        for variant, note in variants:
            unique.setdefault(key(variant), (variant, note))
        for variant, note in unique.values():
            jobs.append(dict(size=size, label=label, note=note, config=config, batch=batch, **variant,
                             warmup=args.warmup, steps=steps))  # fmt: skip
    if args.gpt2_memory:  # a few steps are enough: AdamW's state exists after the first
        config = {**SIZES["gpt2"][1], "block_size": 1024}
        default = default_variant(auto, 1024)
        other = other_attention(default)
        for variant, note in (
            (default, "gpt.py's default: memory"),
            ({**default, "attention": other}, f"with {other} attention"),
        ):
            jobs.append(dict(size="gpt2 memory", label="GPT-2 124M, context 1024", note=note, config=config, batch=4,
                             **variant, warmup=1, steps=2))  # fmt: skip
    return jobs


def run(job: dict, peak: dict[str, float], measured: dict) -> list[str]:
    """Measure one configuration in a fresh process; note its numbers in measured; return its table row."""
    variant = key(job)
    mode = "compiled" if job["compile"] else "eager"
    adamw = ("Muon + " if job["optimizer"] == "muon" else "") + ("fused AdamW" if job["fused"] else "AdamW")
    memory = ", memory kept" if job["keep_memory"] else ""
    variant_name = f"{SHORT[job['dtype']]}, {job['attention']}, {mode}, {job['gelu']} GELU, {adamw}{memory}"
    print(f"{job['label']}: {variant_name} ...", end=" ", file=sys.stderr, flush=True)
    result = in_fresh_process(job)
    warmup_times, step_times = result["times"][: job["warmup"]], result["times"][job["warmup"] :]
    step_s = statistics.median(step_times)
    print(f"{step_s * 1000:,.0f} ms/step", file=sys.stderr)
    c = job["config"]
    # nanoGPT's MFU count: 6 FLOPs per parameter per token (forward 2, backward 4), plus attention's
    # scores and weighted sums, 12 * n_layer * T * n_embd. N counts every parameter, the tied matrix once.
    flops_per_token = 6 * result["params"] + 12 * c["n_layer"] * c["block_size"] * c["n_embd"]
    tokens_per_s = job["batch"] * c["block_size"] / step_s
    fraction = tokens_per_s * flops_per_token / peak[job["dtype"]]
    measured[job["size"], variant] = (tokens_per_s, fraction, result["rss_mb"])
    baseline = measured.get((job["size"], key(FP32_EAGER)))
    # compiling happens in the first step(s): their time beyond that of as many ordinary steps
    compile_s = f"{sum(warmup_times) - len(warmup_times) * step_s:.0f}" if job["compile"] else "-"
    ms = f"{step_s * 1000:,.0f} ({min(step_times) * 1000:,.0f}-{max(step_times) * 1000:,.0f})"
    return [
        job["label"], f"{result['params'] / 1e6:.1f}M", f"{variant_name}: {job['note']}", ms,
        f"{tokens_per_s:,.0f}", f"{tokens_per_s * flops_per_token / 1e9:,.1f} G",
        f"{fraction:.0%}", f"{tokens_per_s / baseline[0]:.2f}x" if baseline else "-", compile_s,
        mb(result["rss_mb"]), mb(result["rss_at_start_mb"]),
    ]  # fmt: skip


def targets(measured: dict, auto: str) -> str:
    """The issue's targets against what was measured above: met or not, never rounded into meeting them."""
    block_sizes = {size: config["block_size"] for size, (_, config, _) in SIZES.items()} | {"gpt2 memory": 1024}

    def default(size: str) -> tuple:
        return key(default_variant(auto, block_sizes[size]))

    def verdict(name: str, value: float | None, target: float, shown: str, at_least: bool = True) -> str:
        if value is None:
            return f"{name}: not measured"
        met = value >= target if at_least else value < target
        goal = (">= " if at_least else "< ") + shown.format(target)
        return f"{name} {shown.format(value)} (target {goal}: {'met' if met else 'NOT met'})"

    def speed_up(size: str) -> float | None:  # gpt.py's default path over plain fp32 eager, same size
        both = (size, default(size)) in measured and (size, key(FP32_EAGER)) in measured
        return measured[size, default(size)][0] / measured[size, key(FP32_EAGER)][0] if both else None

    baby_fraction = measured[("baby", default("baby"))][1] if ("baby", default("baby")) in measured else None
    memory = measured.get(("gpt2 memory", default("gpt2 memory")), (None, None, None))[2]  # None: not measured
    return "; ".join([
        verdict("baby GPT default / fp32 eager tokens/s", speed_up("baby"), 3.0, "{:.2f}x"),
        verdict("cpu recipe default / fp32 eager tokens/s", speed_up("cpu"), 1.5, "{:.2f}x"),
        verdict(f"baby GPT default model FLOP/s / {SHORT[auto]} peak", baby_fraction, 0.65, "{:.0%}"),
        verdict("GPT-2 124M peak RSS at 4 x 1024", None if memory is None else memory / 1000, 6.0, "{:.2f} GB", False),
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="cpu,baby,gpt2", help="comma-separated, from: " + ",".join(SIZES))
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first, per configuration (>= 1)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps for the cpu recipe and the baby GPT")
    parser.add_argument("--gpt2_steps", type=int, default=3, help="timed steps for GPT-2 124M")
    parser.add_argument("--gpt2_context", type=int, default=128, help="GPT-2 124M's context in its speed rows")
    parser.add_argument("--gpt2_memory", action="store_true", help="also GPT-2 124M at batch 4 x context 1024")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows (slow to compile)")
    parser.add_argument("--matmul_size", type=int, default=2048, help="n of the n x n matmuls that measure peak")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: measure one configuration, print JSON
    args = parser.parse_args()
    if args.job:
        return print(json.dumps(measure(json.loads(args.job))))
    if not set(args.sizes.split(",")) <= SIZES.keys() or args.warmup < 1:
        parser.error(f"--sizes takes names from {','.join(SIZES)}, not {args.sizes!r}; --warmup must be >= 1")
    began = time.perf_counter()

    auto_dtype, why = gpt.pick_dtype("cpu", "auto")
    auto = str(auto_dtype).removeprefix("torch.")
    print(f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU: {cpu_name()}; gpt.py picks {SHORT[auto]}: {why}")  # fmt: skip
    print(f"command: {shlex.join(['python', *sys.argv])}")
    load = load_average()  # runnable processes, averaged over the last minute; ours has not started yet
    if load is None:
        print("load average before measuring: - (this system keeps none): make sure nothing else is running\n")
    else:
        busy = " -- other work has been using these cores: if it still is, these numbers are not reliable"
        print(f"load average before measuring: {load:.2f}{busy if load > 0.5 else ''}\n")
    peak, n = {}, args.matmul_size
    for dtype in dict.fromkeys(["float32", auto]):
        best, median = matmul_gflops(getattr(torch, dtype), n, repeats=10)
        peak[dtype] = best * 1e9
        print(f"{SHORT[dtype]} matmul peak: {best:,.0f} GFLOP/s (best of 10 timed {n} x {n} @ {n} x {n} matmuls, "
              f"2 n^3 FLOPs each, after 2 warm-ups; median {median:,.0f})")  # fmt: skip

    measured = {}  # (size, key(variant)) -> (tokens/s, fraction of peak, peak RSS MB)
    rows = [run(job, peak, measured) for job in plan(args, auto)]
    columns = ["model", "params", "precision, attention, mode, GELU, optimizer, memory: variant", "ms/step (min-max)",
               "tokens/s", "model FLOP/s", "of the dtype's matmul peak", "speed-up vs fp32 eager", "compile s",
               "peak RSS MB", "of which at start"]  # fmt: skip
    print("\n| " + " | ".join(columns) + " |")
    print("| --- | ---: | --- |" + " ---: |" * 8)
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    print(
        "\nms/step: median of the timed steps (fastest and slowest in brackets), after the warm-ups. Model FLOPs "
        "per token = 6 N + 12 n_layer T n_embd (nanoGPT's MFU formula; N = parameters). Compile s: the warm-up "
        "steps' time beyond as many ordinary steps. Peak RSS (MB = 10^6 bytes): each configuration in its own fresh "
        "process; 'at start' is Python, torch and gpt.py before the model exists."
    )
    print(f"\ntargets: {targets(measured, auto)}")
    print(f"(the whole benchmark took {(time.perf_counter() - began) / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
