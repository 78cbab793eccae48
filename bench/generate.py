"""Generation speed with and without the KV cache, side by side in one run; and GPT-2 124M against transformers.

    python bench/generate.py                 # the baby GPT (6 layers, 384 wide, context 256), 1,000 tokens
    python bench/generate.py --new_tokens=300 --repeats=1
    python bench/generate.py --gpt2          # GPT-2 124M, greedy, batch 1: gpt.py against transformers' generate

With --gpt2, both libraries hold the same random GPT-2 124M weights (saved by transformers, loaded by gpt.py's
--init_from code) and decode greedily from the same 8-token prompt, on the same threads; only generate() is timed.

The weights are random: speed does not depend on what the model has learned. Each configuration
is timed `repeats` times, alternating, and the median is reported, in fp32 and in the precision
gpt.py picks on this machine (bf16 autocast where the CPU multiplies bf16 faster).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gpt import GPT, GPTConfig, Settings, pick_attention, pick_dtype  # noqa: E402


def tokens_per_second(model: GPT, new_tokens: int, use_cache: bool, autocast) -> float:
    prompt = torch.zeros(1, 1, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with autocast:
        out = model.generate(prompt, new_tokens, use_cache=use_cache, temperature=1.0, generator=generator)
    assert out.size(1) == new_tokens + 1
    return new_tokens / (time.perf_counter() - start)


def timed(generate) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = generate()
    return time.perf_counter() - start, tokens


def gpt2_against_transformers(new_tokens: int, repeats: int) -> None:
    import tempfile

    import transformers

    from gpt import for_sampling, from_pretrained

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()  # GPT-2 124M's shape, random weights
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours_fp32 = from_pretrained(folder).eval()
        ours_bf16 = for_sampling(from_pretrained(folder).eval(), torch.bfloat16)
    prompt = torch.randint(0, 50257, (1, 8), generator=torch.Generator().manual_seed(0))

    def bf16_run() -> list[int]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return ours_bf16.generate(prompt, new_tokens, temperature=0.0)[0, 8:].tolist()

    runs = {
        "transformers, fp32": lambda: hf.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                  do_sample=False, pad_token_id=0)[0, 8:].tolist(),
        "gpt.py, fp32": lambda: ours_fp32.generate(prompt, new_tokens, temperature=0.0)[0, 8:].tolist(),
        "gpt.py, bf16 weights (its pick where the CPU has bf16)": bf16_run,
    }  # fmt: skip
    seconds, tokens = {name: [] for name in runs}, {}
    with torch.no_grad():
        for _ in range(repeats):  # alternate, so a slow spell of the machine hits every row
            for name, run in runs.items():
                took, tokens[name] = timed(run)
                seconds[name].append(took)
    reference = tokens["transformers, fp32"]
    base = new_tokens / statistics.median(seconds["transformers, fp32"])
    print(f"GPT-2 124M (random weights), greedy, batch 1, 8-token prompt, {new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")  # fmt: skip
    print("| decoder | tokens/s (median) | runs | against transformers | same tokens as transformers |")
    print("| --- | ---: | --- | ---: | --- |")
    for name, runs_s in seconds.items():
        rate = new_tokens / statistics.median(runs_s)
        same = sum(a == b for a, b in zip(tokens[name], reference))
        print(f"| {name} | {rate:,.1f} | {', '.join(f'{new_tokens / s:,.1f}' for s in runs_s)} | "
              f"{rate / base:.2f}x | {same} of {new_tokens} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new_tokens", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpt2", action="store_true", help="GPT-2 124M against transformers' generate")
    args = parser.parse_args()
    if args.gpt2:
        return gpt2_against_transformers(args.new_tokens, args.repeats)

    torch.manual_seed(0)
    defaults = Settings()  # the attention and GELU a model trained with gpt.py's CPU defaults uses
    auto_dtype, why = pick_dtype("cpu", "auto")
    attention = pick_attention(defaults.attention, "cpu", auto_dtype, 256)
    config = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, attention=attention,
                       gelu=defaults.gelu)  # fmt: skip
    model = GPT(config).eval()
    print(f"baby GPT: {model.num_params():,} parameters, context {config.block_size}, attention {attention}")
    print(f"gpt.py's precision here: {why}")
    print(f"{args.new_tokens} new tokens from a 1-token prompt, batch 1, {torch.get_num_threads()} threads")
    print("| precision | KV cache | tokens/s (median) | runs | speed-up |")
    print("| --- | --- | ---: | --- | ---: |")
    for dtype in dict.fromkeys([torch.float32, auto_dtype]):  # fp32, and gpt.py's pick if it differs
        autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
        results = {False: [], True: []}
        for _ in range(args.repeats):  # alternate, so a slow spell of the machine hits both
            for use_cache in results:
                results[use_cache].append(tokens_per_second(model, args.new_tokens, use_cache, autocast))
        without = statistics.median(results[False])
        for use_cache, runs in results.items():
            median = statistics.median(runs)
            cells = [str(dtype).removeprefix("torch."), "on" if use_cache else "off", f"{median:,.0f}",
                     ", ".join(f"{r:,.0f}" for r in runs), f"{median / without:.1f}x"]  # fmt: skip
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
