"""How long a training step's matrix products take by themselves: the ceiling on its model FLOP/s.

    python bench/matmuls.py                 # the baby GPT (6 x 384, context 256, batch 16), in bf16
    python bench/matmuls.py --dtype=float32

Every matmul of one training step, forward and backward, at the step's own shapes, each timed alone
(median of 10, after 2 warm-ups) and added up, next to the same dtype's peak as bench/train.py measures it.
Whatever else a step does (casts, softmax, LayerNorm, GELU, the optimizer) comes on top of this.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from train import matmul_gflops  # bench/train.py's peak: best of 10 timed 2048 x 2048 matmuls


def median_seconds(f: Callable[[], object], repeats: int = 10) -> float:
    for _ in range(2):
        f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    B, T, C, n_layer, n_head, vocab_size = 16, 256, 384, 6, 6, 65  # the baby GPT of bench/train.py
    N, head_size = B * T, C // n_head

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=dtype)

    def linear(n_in: int, n_out: int) -> tuple[float, int]:
        """y = x W^T forward; dx = dy W and dW = dy^T x backward: 3 products of 2 N n_in n_out FLOPs."""
        x, w, dy = randn(N, n_in), randn(n_out, n_in), randn(N, n_out)
        seconds = median_seconds(lambda: x @ w.t()) + median_seconds(lambda: dy @ w)
        return seconds + median_seconds(lambda: dy.t() @ x), 3 * 2 * N * n_in * n_out

    def batched(m: int, k: int, n: int) -> tuple[float, int]:
        """One attention product per (sequence, head), forward and its two backward products."""
        a, b, g = randn(B * n_head, m, k), randn(B * n_head, k, n), randn(B * n_head, m, n)
        seconds = median_seconds(lambda: a @ b) + median_seconds(lambda: g @ b.transpose(1, 2))
        return seconds + median_seconds(lambda: a.transpose(1, 2) @ g), 3 * 2 * B * n_head * m * k * n

    per_layer = [linear(C, 3 * C), batched(T, head_size, T), batched(T, T, head_size), linear(C, C)]
    per_layer += [linear(C, 4 * C), linear(4 * C, C)]  # attention: q, k, v; scores; weighted sum; out. MLP.
    head_seconds, head_flops = linear(C, vocab_size)
    seconds = n_layer * sum(s for s, _ in per_layer) + head_seconds
    flops = n_layer * sum(f for _, f in per_layer) + head_flops
    peak = matmul_gflops(dtype, 2048, repeats=10)[0] * 1e9
    params = 12 * n_layer * C * C + vocab_size * C + T * C  # weights, tied embedding, positions (biases aside)
    model_flops = (6 * params + 12 * n_layer * T * C) * N  # nanoGPT's count, as bench/train.py
    print(f"{args.dtype}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"peak (best of 10 timed 2048 x 2048 matmuls, as bench/train.py): {peak / 1e9:,.0f} GFLOP/s")
    print(f"a baby GPT step's matmuls: {flops / 1e9:.0f} GFLOP in {seconds * 1e3:.0f} ms = {flops / seconds / 1e9:,.0f}"
          f" GFLOP/s ({flops / seconds / peak:.0%} of that peak)")  # fmt: skip
    print(f"the step's model FLOPs (nanoGPT's count): {model_flops / 1e9:.0f} G; at 65% of the peak the whole step"
          f" would take {model_flops / (0.65 * peak) * 1e3:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
