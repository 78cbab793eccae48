"""Generation: the KV cache changes speed, never text; the sampling controls do what they promise."""

import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY, gpt2_tokenizer_or_skip, on_the_cpu, run_script, write_shakespeare
from gpt import (
    GPT,
    GPTConfig,
    for_sampling,
    generate_text,
    load_checkpoint,
    make_tokenizer,
    model_from,
    sample_next_token,
    tokenizer_from,
)


def tiny_model(vocab_size: int = 65, block_size: int = 16, attention: str = "sdpa") -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size, block_size, n_layer=2, n_head=4, n_embd=32, attention=attention)
    return GPT(config).eval()


@pytest.mark.parametrize("attention", ["sdpa", "by_hand"])
def test_greedy_text_is_the_same_with_and_without_kv_cache_far_past_block_size(attention):
    model = tiny_model(block_size=16, attention=attention)
    prompt = torch.randint(65, (2, 5))
    with_cache = model.generate(prompt, 100, temperature=0, use_cache=True)
    without = model.generate(prompt, 100, temperature=0, use_cache=False)
    assert with_cache.shape == (2, 105)
    assert torch.equal(with_cache, without)


def test_kv_cache_matches_full_recompute_of_the_last_block_size_tokens_while_they_fit():
    # before the window fills, the cache must reproduce exactly what a plain forward pass predicts
    model = tiny_model(block_size=32)
    out = model.generate(torch.randint(65, (1, 3)), 29, temperature=0)
    for t in range(3, 32):
        logits, _ = model(out[:, :t])
        assert out[0, t] == logits[0, -1].argmax()


def test_top_k_never_samples_outside_the_k_likeliest():
    torch.manual_seed(0)
    logits = torch.randn(1, 50).repeat(2000, 1)
    allowed = set(torch.topk(logits[0], 5).indices.tolist())
    drawn = sample_next_token(logits, temperature=1.0, top_k=5)
    assert set(drawn[:, 0].tolist()) == allowed


def test_top_p_keeps_the_smallest_set_of_likeliest_tokens_that_reaches_p():
    probs = torch.tensor([[0.10, 0.50, 0.15, 0.25]])
    logits = probs.log().repeat(20_000, 1)
    generator = torch.Generator().manual_seed(0)
    drawn = sample_next_token(logits, top_p=0.7, generator=generator)[:, 0]
    # 0.50 alone falls short of 0.7; 0.50 + 0.25 reaches it, so exactly tokens 1 and 3 remain
    assert set(drawn.tolist()) == {1, 3}
    assert abs((drawn == 1).float().mean().item() - 0.50 / 0.75) < 0.02  # renormalised among them
    drawn = sample_next_token(logits, top_p=0.76, generator=generator)[:, 0]
    assert set(drawn.tolist()) == {1, 2, 3}


def test_temperature_zero_is_the_same_every_time_whatever_the_seed():
    model = tiny_model()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    runs = [model.generate(prompt, 30, temperature=0, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    assert torch.equal(runs[0], runs[1])


def test_same_seed_same_sample_and_another_seed_another():
    model, tokenizer = tiny_model(), make_tokenizer("char", "".join(chr(32 + i) for i in range(65)))

    def sample(seed: int) -> str:
        return "".join(pieces[0] for pieces in generate_text(model, tokenizer, "", 1, 50, seed, temperature=1.0))

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_generation_stops_at_gpt2_end_of_text():
    gpt2_tokenizer_or_skip()
    tokenizer = make_tokenizer("gpt2")
    model = tiny_model(vocab_size=tokenizer.vocab_size)
    with torch.no_grad():  # make <|endoftext|> by far the likeliest next token
        model.ln_f.weight.zero_()
        model.ln_f.bias.copy_(model.wte.weight[tokenizer.stop_token] * 100)
    pieces = list(generate_text(model, tokenizer, "Hello", 1, 50, seed=0, temperature=0))
    assert "".join(p[0] for p in pieces) == "Hello"
    assert len(pieces) == 3  # the prompt, the stop token's empty piece, the decoder's final flush


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory):
    gpt2_tokenizer_or_skip()
    folder = write_shakespeare(tmp_path_factory.mktemp("gpt2"), chars=50_000)
    result = run_script("gpt.py", [*TINY, "--tokenizer=gpt2", "--max_iters=2", "--max_new_tokens=1"], folder)
    assert result.returncode == 0, result.stderr
    return folder


def test_streamed_sample_equals_the_decoded_tokens_byte_for_byte(gpt2_checkpoint):
    # a barely trained GPT-2-vocabulary model emits random tokens, many of them pieces of multi-byte
    # characters: streaming must neither print broken characters early nor drop bytes
    prompt = "Naïve café, 日本語 🙂"
    args = ["--sample", "--num_samples=1", "--max_new_tokens=200", "--temperature=1.5", "--seed=3", "--dtype=float32"]
    out = subprocess.run(
        [sys.executable, str(REPO / "gpt.py"), *on_the_cpu([*args, f"--prompt={prompt}"])],
        cwd=gpt2_checkpoint,
        capture_output=True,
    )
    assert out.returncode == 0, out.stderr
    streamed = out.stdout.split(b"--- sample 1 of 1 ---\n", 1)[1].removesuffix(b"\n")

    checkpoint = load_checkpoint(str(gpt2_checkpoint / "trained_model.pth"), "cpu")
    tokenizer = tokenizer_from(checkpoint)
    model = GPT(GPTConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
    ids = (
        model.eval()
        .generate(
            torch.tensor([tokenizer.encode(prompt)]), 200, temperature=1.5, generator=torch.Generator().manual_seed(3)
        )[0]
        .tolist()
    )
    if tokenizer.stop_token in ids:
        ids = ids[: ids.index(tokenizer.stop_token)]
    assert streamed == tokenizer.decode(ids).encode("utf-8")
    assert streamed.startswith(prompt.encode("utf-8"))


def test_prompt_with_characters_outside_the_vocabulary_gets_one_line(shakespeare):
    assert run_script("gpt.py", [*TINY, "--max_iters=1", "--max_new_tokens=1"], shakespeare).returncode == 0
    result = run_script("gpt.py", ["--sample", "--prompt=Grüße, 日本"], shakespeare)
    assert result.returncode != 0
    assert "'ßü日本'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bf16_weights_for_sampling_predict_what_fp32_does_within_the_bound_for_sampling_states(trained):
    # a trained model, on the text it trained on: the next-token distributions with the matrices in bf16
    # (what --sample uses where the CPU multiplies bf16) against the same model in fp32
    checkpoint = load_checkpoint(str(trained / "trained_model.pth"), "cpu")
    model, tokenizer = model_from(checkpoint, "m", "cpu", "auto", torch.bfloat16)
    text = (trained / "input.txt").read_text()[: 4 * 32]
    idx = torch.tensor(tokenizer.encode(text)).view(4, 32)
    with torch.no_grad():
        fp32 = torch.log_softmax(model(idx)[0], -1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = torch.log_softmax(for_sampling(model, torch.bfloat16)(idx)[0].float(), -1)
    assert model.lm_head.weight.dtype == torch.bfloat16 and model.wpe.weight.dtype == torch.float32
    kl = (fp32.exp() * (fp32 - bf16)).sum(-1)  # nats lost by sampling bf16's distribution instead
    assert kl.mean() < 1e-3
    assert (bf16.argmax(-1) == fp32.argmax(-1)).float().mean() >= 0.95
