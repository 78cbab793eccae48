"""What the training loop saves by not waiting: the weight average in one call, and the loss read now and then.

    python bench/step.py                   # on the device gpt.py picks (CUDA, mps, else the CPU)
    python bench/step.py --device=cpu --steps=100

Two comparisons, each pair measured alternately in one process so that a shared machine's slow spells hit both:

1. the moving average of the weights after each step: a lerp_ per tensor (a kernel launch each on a GPU), against
   gpt.update_average, which moves every tensor in one torch._foreach_lerp_ call;
2. a whole training step as gpt.py's loop runs it (the next batch from gpt.get_batch, gpt.train_step, the average),
   with the loss read after every step (the device waited for each time), against read every gpt.READ_EVERY steps
   as Run.stepped does on a GPU.

A CPU computes as it is told, so there both should be within noise of each other; on a GPU the launches and the
waits are what a small model's step is made of. The tokens are random: speed does not depend on what is read.
"""

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gpt  # noqa: E402
from train import SIZES, synchronize  # noqa: E402


def per_tensor_average(averaged: gpt.GPT, model: gpt.GPT, step: int, ema_decay: float) -> None:
    """update_average as a loop: one lerp_ per tensor."""
    decay = min(ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for average, weight in zip(averaged.parameters(), model.parameters()):
            average.lerp_(weight, 1 - decay)


def alternate(variants: dict[str, Callable[[], None]], repeats: int, device: str) -> dict[str, float]:
    """Median seconds of each variant's call, the variants taking turns."""
    times = {name: [] for name in variants}
    for i in range(repeats + 2):  # the first two rounds warm up
        for name, run in variants.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    parser.add_argument("--steps", type=int, default=40, help="training steps in each timed run of the loop")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each variant")
    args = parser.parse_args()
    hw = gpt.pick_hardware(gpt.Settings(device=gpt.pick_device(args.device)))
    size = "cpu" if hw.device == "cpu" else "baby"
    name, shape, batch = SIZES[size]
    config = gpt.GPTConfig(**shape, attention=hw.attention, gelu=gpt.Hyperparameters.gelu)
    torch.manual_seed(0)
    model = gpt.GPT(config).to(hw.device)
    averaged = copy.deepcopy(model).requires_grad_(False)
    hp = gpt.Hyperparameters()
    optimizer = gpt.make_optimizer(model, hp, hw.fused_adamw)
    scaler = torch.amp.GradScaler(hw.device_type, enabled=hw.dtype == torch.float16)
    data = np.random.default_rng(0).integers(0, config.vocab_size, 200_000, dtype=np.uint16)
    generator = torch.Generator().manual_seed(0)
    print(f"{hw.device}, {str(hw.dtype).removeprefix('torch.')}, torch {torch.__version__}; {name}, batch {batch}\n")

    tensors = len(list(model.parameters()))
    average = alternate({
        "loop": lambda: [per_tensor_average(averaged, model, s, hp.ema_decay) for s in range(args.steps)],
        "foreach": lambda: [gpt.update_average(averaged, model, s, hp.ema_decay) for s in range(args.steps)],
    }, args.repeats, hw.device)  # fmt: skip

    def training(read_every: int) -> Callable[[], None]:
        def run() -> None:
            pending = []
            for step in range(args.steps):
                starts = gpt.random_starts(len(data), config.block_size, batch, generator)
                x, y = gpt.get_batch(data, starts, config.block_size, hw.device)
                loss = gpt.train_step(model, optimizer, scaler, [(x, y)], hp.grad_clip, hw.autocast)
                gpt.update_average(averaged, model, step, hp.ema_decay)
                pending.append(loss.detach())
                if (step + 1) % read_every == 0:
                    torch.stack(pending).tolist()  # the wait, as Run.read_losses
                    pending = []

        return run

    loop = alternate({"every step": training(1), "every 10": training(gpt.READ_EVERY)}, args.repeats, hw.device)
    print("| what | waits or launches | ms per step | ms per step, gpt.py's way | saved |")
    print("| --- | --- | ---: | ---: | ---: |")
    per = {k: v * 1000 / args.steps for k, v in average.items()}
    print(f"| the weight average ({tensors} tensors) | lerp_ per tensor vs one _foreach_lerp_ | {per['loop']:.3f} "
          f"| {per['foreach']:.3f} | {1 - per['foreach'] / per['loop']:.0%} |")  # fmt: skip
    per = {k: v * 1000 / args.steps for k, v in loop.items()}
    print(f"| a whole training step | loss read every step vs every {gpt.READ_EVERY} | {per['every step']:.2f} "
          f"| {per['every 10']:.2f} | {1 - per['every 10'] / per['every step']:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
