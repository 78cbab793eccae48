"""The "Look inside" tab of app.py: its numbers, as the page receives them, checked against gpt.py computed here."""

import math

import app
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpt
from test_app import require, serve_app, tiny_checkpoint

TOP_TOKENS = 10  # app.py shows the 10 likeliest next tokens


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    """A gradio_client connected to app.py serving a tiny model (as in test_app.py)."""
    require("gradio")
    gradio_client = require("gradio_client")
    with serve_app(tiny_checkpoint(tmp_path_factory)) as url:
        yield gradio_client.Client(url, verbose=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[gpt.GPT, gpt.Tokenizer]:
    """The model the page serves, loaded here to compute what the page should show."""
    model, tokenizer, _ = gpt.load_model(str(tiny_checkpoint(tmp_path_factory)), "cpu")
    return model.eval(), tokenizer


def next_tokens(client, text: str, temperature=1.0, top_k=0, top_p=1.0) -> tuple[str, list[dict], list]:
    """The caption, the chart's bars (dicts: token, probability, status, drawn, model, id), the tokens to click."""
    caption, chart, choices = client.predict(text, temperature, top_k, top_p, api_name="/next_tokens")
    columns, rows = chart["value"]["columns"], chart["value"]["data"]
    return caption, [dict(zip(columns, row)) for row in rows], choices["choices"]


@torch.no_grad()
def last_logits(model: gpt.GPT, tokenizer: gpt.Tokenizer, text: str) -> torch.Tensor:
    """The model's scores for the token after text: (1, vocab_size)."""
    logits, _ = model(torch.tensor([tokenizer.encode(text)]))
    return logits[:, -1].float()


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.6), (0.5, 3, 0.4)])
def test_the_chart_shows_the_probabilities_sampling_draws_with(client, tiny, temperature, top_k, top_p):
    model, tokenizer = tiny
    _, bars, _ = next_tokens(client, "ROMEO:", temperature, top_k, top_p)
    expected = gpt.next_token_probs(last_logits(model, tokenizer, "ROMEO:"), temperature, top_k, top_p)[0]
    expected = expected / expected.sum()  # what torch.multinomial draws from: renormalised
    ids = [bar["id"] for bar in bars]
    assert ids == last_logits(model, tokenizer, "ROMEO:")[0].topk(TOP_TOKENS).indices.tolist()  # likeliest first
    assert [bar["drawn"] for bar in bars] == pytest.approx(expected[ids].tolist(), abs=1e-6)
    assert [bar["status"] == "kept" for bar in bars] == (expected[ids] > 0).tolist()


def test_with_top_k_5_five_tokens_are_kept_their_probabilities_add_up_to_1_and_the_rest_are_cut(client):
    _, bars, choices = next_tokens(client, "ROMEO:", temperature=0.8, top_k=5)
    assert [bar["status"] for bar in bars] == ["kept"] * 5 + ["cut by top-k"] * 5
    assert sum(bar["drawn"] for bar in bars) == pytest.approx(1.0)
    assert all(label.endswith("(cut)") for label, _ in choices[5:])


def test_top_p_cuts_the_unlikely_tokens_once_the_likelier_ones_reach_p(client):
    _, bars, _ = next_tokens(client, "ROMEO:", temperature=1.0, top_p=0.3)
    kept = [bar for bar in bars if bar["status"] == "kept"]
    assert sum(bar["model"] for bar in kept[:-1]) < 0.3 <= sum(bar["model"] for bar in kept)
    assert all(bar["status"] == "cut by top-p" for bar in bars[len(kept) :])
    assert sum(bar["drawn"] for bar in kept) == pytest.approx(1.0)


def test_sample_next_token_draws_each_token_as_often_as_the_chart_says(client, tiny):
    model, tokenizer = tiny
    _, bars, _ = next_tokens(client, "ROMEO:", temperature=0.8, top_k=0, top_p=0.7)
    logits = last_logits(model, tokenizer, "ROMEO:").expand(20_000, -1)  # 20,000 draws of the next token
    draws = gpt.sample_next_token(logits, 0.8, 0, 0.7, generator=torch.Generator().manual_seed(0))
    frequency = torch.bincount(draws[:, 0], minlength=tokenizer.vocab_size) / len(draws)
    assert [frequency[bar["id"]].item() for bar in bars] == pytest.approx([bar["drawn"] for bar in bars], abs=0.015)
    assert all(frequency[bar["id"]] == 0 for bar in bars if bar["status"] != "kept")


def test_temperature_0_shows_the_likeliest_token_at_probability_1(client):
    _, bars, _ = next_tokens(client, "ROMEO:", temperature=0)
    assert [bar["drawn"] for bar in bars] == [1.0] + [0.0] * (TOP_TOKENS - 1)
    assert [bar["status"] for bar in bars] == ["kept"] + ["cut: greedy"] * (TOP_TOKENS - 1)


def test_a_temperature_too_small_to_divide_by_shows_temperature_0(client):
    caption, bars, _ = next_tokens(client, "ROMEO:", temperature=1e-40)
    assert "temperature 0," in caption
    assert [bar["drawn"] for bar in bars] == [1.0] + [0.0] * (TOP_TOKENS - 1)


@pytest.mark.parametrize(
    "token",
    ["²", "①", "9" * 5000, 10**400, "99999", "-1", " 7", "7.0"],
    ids=["superscript 2", "circled 1", "5,000 digits", "10**400", "past the vocabulary", "-1", "space 7", "7.0"],
)
def test_a_token_that_is_not_a_token_id_leaves_the_text_as_it_was(client, token):
    assert client.predict("ROMEO:", token, api_name="/append_token") == "ROMEO:"


def test_clicking_the_likeliest_token_each_time_writes_what_greedy_generation_writes(client):
    text = "ROMEO:"
    for _ in range(8):
        _, _, choices = next_tokens(client, text, temperature=0)
        text = client.predict(text, choices[0][1], api_name="/append_token")  # click the first token
    _, [greedy] = client.predict("ROMEO:", 8, 1, 0, 0, 1337, 1.0, api_name="/generate")
    assert text == greedy and len(text) == len("ROMEO:") + 8


def test_out_of_range_settings_are_clamped_on_the_server(client, tiny):
    _, tokenizer = tiny
    caption, bars, _ = next_tokens(client, "ROMEO:", temperature=99, top_k=10**9, top_p=-1)
    assert f"temperature 2, top-k {tokenizer.vocab_size}, top-p 0.01" in caption
    assert [bar["status"] for bar in bars].count("kept") == 1  # top-p 0.01: only the likeliest
    caption, _ = client.predict("ROMEO:", 99, -3, api_name="/attention")
    assert caption.startswith("Layer 1, head 0")  # the tiny model has layers 0-1, heads 0-1
    caption, bars, _ = next_tokens(client, "ROMEO:", temperature=None, top_k="many", top_p=None)
    assert "temperature 0, top-k off, top-p 0.01" in caption and bars[0]["drawn"] == 1.0


@pytest.mark.parametrize("text, message", [("日本", "lacks: '日本'"), ("a" * 2001, "the limit is 2,000")])
def test_an_unreadable_or_too_long_text_gets_a_message_in_every_view(client, text, message):
    caption, chart, _ = client.predict(text, 1.0, 0, 1.0, api_name="/next_tokens")
    assert caption.startswith("Cannot look") and message in caption and chart is None
    caption, heatmap = client.predict(text, 0, 0, api_name="/attention")
    assert caption.startswith("Cannot look") and message in caption and heatmap is None
    caption, shaded, _ = client.predict(text, api_name="/surprise")
    assert caption.startswith("Cannot look") and message in caption and shaded is None


def test_the_surprise_of_the_tokens_averages_to_the_models_loss_on_the_text(client, tiny):
    model, tokenizer = tiny
    text = "ROMEO: What light"
    caption, shaded, table = client.predict(text, api_name="/surprise")
    idx = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        _, loss = model(idx[:, :-1], idx[:, 1:])  # the loss gpt.py trains on
    surprises = [row[table["headers"].index("surprise (nats)")] for row in table["data"]]
    assert len(surprises) == len(text) - 1  # every token but the first, which has no prediction
    assert sum(surprises) / len(surprises) == pytest.approx(loss.item(), abs=1e-3)
    assert f"Mean surprise {loss.item():.3f} nats" in caption
    assert shaded[0] == {"token": "R", "class_or_confidence": None}  # the first token is not shaded
    assert "".join(piece["token"] for piece in shaded) == text
    assert all(0 <= piece["class_or_confidence"] <= 1 for piece in shaded[1:])


def test_a_text_longer_than_the_context_is_read_by_its_last_block_size_tokens(client, tiny):
    model, tokenizer = tiny
    block_size = model.config.block_size
    text = "ROMEO: Wherefore art thou, Romeo? Deny thy father and refuse thy name."
    caption, shaded, table = client.predict(text, api_name="/surprise")
    idx = torch.tensor([tokenizer.encode(text)[-block_size:]])
    with torch.no_grad():
        _, loss = model(idx[:, :-1], idx[:, 1:])
    surprises = [row[2] for row in table["data"]]
    assert len(surprises) == block_size - 1
    assert sum(surprises) / len(surprises) == pytest.approx(loss.item(), abs=1e-3)
    assert f"it leaves out the first {len(text) - block_size}." in caption
    assert "".join(piece["token"] for piece in shaded) == text  # the whole text, its start unshaded


def test_attention_weights_are_the_softmax_of_queries_times_keys_under_a_causal_mask(tiny):
    model, tokenizer = tiny
    T, C, n_head = model.config.block_size, model.config.n_embd, model.config.n_head
    head_size = C // n_head
    idx = torch.tensor([tokenizer.encode("ROMEO: Wherefore art thou, Romeo? Deny thy")[:T]])
    maps = gpt.attention_maps(model, idx)
    assert len(maps) == model.config.n_layer
    with torch.no_grad():
        x = model.wte(idx) + model.wpe(torch.arange(T))  # the blocks' input, as GPT.hidden makes it
        for block, weights in zip(model.blocks, maps):
            q, k, _ = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
            q, k = (t.view(1, T, n_head, head_size).transpose(1, 2) for t in (q, k))  # (1, n_head, T, head_size)
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            scores = (q @ k.transpose(-2, -1) / math.sqrt(head_size)).masked_fill(~causal, float("-inf"))
            torch.testing.assert_close(weights, F.softmax(scores, dim=-1)[0])
            # PyTorch's own attention returns the weights when the values are the identity matrix
            identity = torch.eye(T).expand(1, n_head, T, T)
            torch.testing.assert_close(weights, F.scaled_dot_product_attention(q, k, identity, is_causal=True)[0])
            x = block(x)


def test_every_attention_row_sums_to_1_and_no_token_looks_ahead(tiny):
    model, tokenizer = tiny
    for weights in gpt.attention_maps(model, torch.tensor([tokenizer.encode("ROMEO: What light")])):
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(weights.shape[:2]))
        assert (weights.triu(diagonal=1) == 0).all()


def test_the_heatmap_shows_the_chosen_head_over_the_last_block_size_tokens_labelled_by_them(tiny):
    require("matplotlib")
    model, tokenizer = tiny
    T = model.config.block_size
    text = "ROMEO: Wherefore art thou, Romeo? Deny thy father"
    caption, figure = app.make_inside(model, tokenizer)["attention"](text, 1, 1)
    window = torch.tensor([tokenizer.encode(text)[-T:]])
    expected = gpt.attention_maps(model, window)[1][1].numpy()
    shown = figure.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown.data, expected, atol=1e-6)
    assert (shown.mask == np.triu(np.ones((T, T), dtype=bool), k=1)).all()  # the future greyed: the causal triangle
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels == [ch.replace(" ", "␣") for ch in text[-T:]]
    assert caption.startswith("Layer 1, head 1") and f"it leaves out the first {len(text) - T}." in caption
