"""What --optimizer=muon costs per step against AdamW, measured side by side in one process.

    python bench/optimizer.py                  # the two shapes --minutes picks on a CPU
    python bench/optimizer.py --steps=100

Each shape gets two identical models, one stepped by AdamW (gpt.make_optimizer) and one by Muon with AdamW
(gpt.MuonAndAdamW), and their training steps (gpt.train_step, then update_average, as gpt.py runs them) alternate:
AdamW, Muon, AdamW, ... so a shared machine's slow spells hit both alike. The tokens are random: speed does not
depend on what the model reads. What Muon buys per step is a loss, measured by whole runs (docs/experiments.md).
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gpt  # noqa: E402

# name: (GPTConfig fields, batch size), as gpt.py --minutes trains them on a CPU (BUDGETS in gpt.py)
SHAPES = {
    "1 minute: 4 x 128, context 64, batch 32": (dict(n_layer=4, n_head=4, n_embd=128, block_size=64), 32),
    "5 minutes: 4 x 192, context 128, batch 32": (dict(n_layer=4, n_head=6, n_embd=192, block_size=128), 32),
}


def trainer(config: gpt.GPTConfig, optimizer: str, hw: gpt.Hardware):
    """One step of gpt.py's training with this optimizer, as a function of the batch."""
    torch.manual_seed(0)
    model = gpt.GPT(config)
    hp = gpt.Hyperparameters(optimizer=optimizer)
    steps = gpt.make_optimizer(model, hp, hw.fused_adamw)
    averaged = copy.deepcopy(model).requires_grad_(False)
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def step(batch: tuple[torch.Tensor, torch.Tensor], i: int) -> None:
        gpt.train_step(model, steps, scaler, [batch], hp.grad_clip, hw.autocast).item()
        gpt.update_average(averaged, model, i, hp.ema_decay)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each optimizer, per shape")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each first")
    args = parser.parse_args()
    gpt.keep_freed_memory()
    hw = gpt.pick_hardware(gpt.Settings(device="cpu"))
    print(f"cpu, {hw.dtype}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| shape | AdamW ms/step | Muon + AdamW ms/step | Muon's step / AdamW's |")
    print("| --- | ---: | ---: | ---: |")
    for name, (shape, batch) in SHAPES.items():
        config = gpt.GPTConfig(vocab_size=65, **shape, gelu="exact", attention=hw.attention)
        steps = {optimizer: trainer(config, optimizer, hw) for optimizer in ("adamw", "muon")}
        tokens = torch.randint(config.vocab_size, (batch, config.block_size + 1))
        batch_xy = (tokens[:, :-1], tokens[:, 1:])
        times = {optimizer: [] for optimizer in steps}
        for i in range(args.warmup + args.steps):
            for optimizer, step in steps.items():  # alternating: the same moments of the machine for both
                start = time.perf_counter()
                step(batch_xy, i)
                if i >= args.warmup:
                    times[optimizer].append(time.perf_counter() - start)
        adamw, muon = (statistics.median(times[o]) for o in ("adamw", "muon"))
        print(f"| {name} | {adamw * 1000:.1f} | {muon * 1000:.1f} | {muon / adamw:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
