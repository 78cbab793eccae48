"""The model's hand-written parts, checked against PyTorch and against the numbers GPT-2 has."""

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from gpt import GPT, ChunkedLoss, GPTConfig, attention_by_hand, train_step, update_average


def tiny_config(**changes) -> GPTConfig:
    return GPTConfig(**{"vocab_size": 65, "block_size": 16, "n_layer": 2, "n_head": 4, "n_embd": 32, **changes})


def test_attention_by_hand_equals_pytorch_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 10, 8) for _ in range(3))  # (B, n_head, T, head_size)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(attention_by_hand(q, k, v), expected, atol=1e-6, rtol=1e-5)


def test_attention_by_hand_for_the_newest_tokens_equals_the_last_rows_of_sdpa():
    # generating with a KV cache asks for the newest tokens' outputs, attending to every key so far
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 10, 8) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)[:, :, -3:]
    torch.testing.assert_close(attention_by_hand(q[:, :, -3:], k, v), expected, atol=1e-6, rtol=1e-5)


def test_model_gives_the_same_logits_with_either_attention():
    torch.manual_seed(0)
    by_hand = GPT(tiny_config(attention="by_hand")).eval()
    sdpa = GPT(tiny_config(attention="sdpa")).eval()
    sdpa.load_state_dict(by_hand.state_dict())
    idx = torch.randint(65, (2, 16))
    torch.testing.assert_close(by_hand(idx)[0], sdpa(idx)[0], atol=1e-5, rtol=1e-5)


def test_loss_in_chunks_equals_cross_entropy_of_all_the_logits_with_the_same_gradients():
    # GPT-2's vocabulary makes chunks of 333 tokens, so 2 x 500 targets take four chunks, the last one short
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=50257, block_size=500, n_layer=1))
    idx, targets = torch.randint(50257, (2, 500)), torch.randint(50257, (2, 500))
    _, loss = ChunkedLoss(model)(idx, targets)
    loss.backward()
    chunked_gradients = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    logits, _ = model(idx)
    expected = F.cross_entropy(logits.view(-1, 50257), targets.view(-1))  # PyTorch's, on every logit at once
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for chunked, whole in zip(chunked_gradients, (p.grad for p in model.parameters())):
        torch.testing.assert_close(chunked, whole)


def test_changing_a_future_token_never_changes_earlier_logits():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    idx = torch.randint(65, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 65
    logits, _ = model(idx)
    logits_changed, _ = model(changed)
    assert torch.equal(logits[:, :10], logits_changed[:, :10])  # positions before 10 cannot see it
    assert not torch.allclose(logits[:, 10:], logits_changed[:, 10:])  # positions from 10 on do


def test_initial_loss_is_about_ln_vocab_size():
    # small random weights give near-uniform predictions, and a uniform guess costs ln(vocab_size)
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx = torch.randint(65, (8, 16))
    _, loss = model(idx, torch.randint(65, (8, 16)))
    assert abs(loss.item() - math.log(65)) < 0.1


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    x, y = torch.randint(65, (4, 16)), torch.randint(65, (4, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05  # it has memorised 64 random next-tokens


def test_gpt2_small_config_has_gpt2s_124m_parameters():
    # 124,439,808 is the parameter count of OpenAI's GPT-2 small (Hugging Face 'gpt2'), with the
    # output head tied to the token embedding
    with torch.device("meta"):  # shapes only, no memory
        model = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768))
    assert model.num_params() == 124_439_808


def test_output_head_is_tied_to_token_embedding():
    model = GPT(tiny_config())
    assert model.lm_head.weight.data_ptr() == model.wte.weight.data_ptr()


def test_temperature_zero_always_picks_the_likeliest_token():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    idx = torch.randint(65, (1, 5))
    out = model.generate(idx, max_new_tokens=20, temperature=0)
    for t in range(5, 25):  # each new token is the argmax of the model's prediction from its prefix
        logits, _ = model(out[:, max(0, t - 16) : t])
        assert out[0, t] == logits[0, -1].argmax()


def test_top_k_never_samples_outside_the_k_likeliest():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    idx = torch.zeros(64, 1, dtype=torch.long)
    logits, _ = model(idx[:1])
    allowed = set(torch.topk(logits[0, -1], 3).indices.tolist())
    out = model.generate(idx, max_new_tokens=1, temperature=1.0, top_k=3)
    assert set(out[:, 1].tolist()) <= allowed


def test_weight_average_is_pytorchs_exponential_moving_average_once_its_memory_is_full():
    # with ema_decay=0.05 the warm-up rule (1 + step) / (10 + step) is never the smaller one,
    # so every update must match PyTorch's own EMA with decay 0.05
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    ours = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    ours.load_state_dict(model.state_dict())
    ema = torch.optim.swa_utils.get_ema_multi_avg_fn(0.05)
    pytorchs = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema)
    pytorchs.update_parameters(model)  # its first update copies the weights, as ours starts from a copy
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))  # a training step, roughly
        update_average(ours, model, step, ema_decay=0.05)
        pytorchs.update_parameters(model)
    for a, b in zip(ours.parameters(), pytorchs.module.parameters()):
        torch.testing.assert_close(a, b)


def test_weight_average_starts_with_a_short_memory():
    # TensorFlow's ExponentialMovingAverage rule: decay min(ema_decay, (1 + step) / (10 + step)),
    # so the first update keeps only 1/10 of the starting weights
    average, model = (GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)) for _ in range(2))
    with torch.no_grad():
        for a, p in zip(average.parameters(), model.parameters()):
            a.fill_(1.0)
            p.fill_(0.0)
    update_average(average, model, step=0, ema_decay=0.99)
    assert all(torch.allclose(a, torch.full_like(a, 0.1)) for a in average.parameters())


def test_a_training_step_reports_the_mean_loss_of_its_micro_batches():
    # the progress bar shows this; with --grad_accum_steps=2 it used to be the last micro-batch's alone
    torch.manual_seed(0)
    model = GPT(tiny_config())
    batches = [(idx, torch.roll(idx, -1, dims=1)) for idx in torch.randint(11, (2, 3, 8))]
    with torch.no_grad():
        expected = sum(model(x, y)[1] for x, y in batches) / 2  # before the step changes the weights
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    reported = train_step(model, optimizer, scaler, batches, grad_clip=1.0, autocast=nullcontext())
    torch.testing.assert_close(reported, expected)
