"""GPT-2 in and out: weights from a Hugging Face GPT-2 give the same logits, and exports load back in transformers.

No network here, so the reference is a small randomly initialised transformers GPT2LMHeadModel with
GPT-2's real 50,257-token vocabulary, saved with save_pretrained."""

import os
from pathlib import Path

import pytest
import torch

from conftest import TINY, gpt2_tokenizer_or_skip, run_script
from gpt import GPT, GPTConfig, from_pretrained, load_checkpoint

transformers = pytest.importorskip("transformers") if os.environ.get("CI") != "true" else __import__("transformers")
OFFLINE = {"HF_HUB_OFFLINE": "1"}


def small_gpt2(**changes) -> "transformers.GPT2LMHeadModel":
    torch.manual_seed(0)
    # initializer_range=0.3 (GPT-2's is 0.02): larger weights put the MLP's inputs where the tanh
    # and exact GELU differ by ~1e-3 in the logits, so a test mixing them up fails
    config = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3, **changes)
    return transformers.GPT2LMHeadModel(config).eval()


def small_bert() -> "transformers.BertModel":
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    return transformers.BertModel(config)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hf_gpt2")
    small_gpt2().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("activation", ["gelu_new", "gelu"])  # GPT-2's tanh GELU, and the exact one
def test_weights_from_hugging_face_give_the_same_logits(tmp_path, activation):
    small_gpt2(activation_function=activation).save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ours = from_pretrained(str(tmp_path)).eval()
    idx = torch.randint(50257, (2, 64))
    with torch.no_grad():
        difference = (ours(idx)[0] - hf(idx).logits).abs().max().item()
    assert difference < 1e-5


def test_greedy_generation_agrees_with_hugging_face_for_50_tokens(hf_dir):
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    ours = from_pretrained(str(hf_dir)).eval()
    prompt = torch.tensor([[464, 2068, 7586, 21831]])  # 'The quick brown fox' in GPT-2 tokens
    expected = hf.generate(
        prompt, max_new_tokens=50, do_sample=False, pad_token_id=50256, attention_mask=torch.ones_like(prompt)
    )
    assert torch.equal(ours.generate(prompt, 50, temperature=0), expected)


def test_fine_tune_then_export_loads_in_transformers_with_the_same_logits(hf_dir, shakespeare):
    gpt2_tokenizer_or_skip()
    tiny = [arg for arg in TINY if not arg.startswith(("--n_layer", "--n_head", "--n_embd"))]  # GPT-2's shape
    args = [*tiny, f"--init_from={hf_dir}", "--max_iters=3", "--eval_interval=3", "--max_new_tokens=5"]
    result = run_script("gpt.py", args, shakespeare)
    assert result.returncode == 0, result.stderr
    assert f"starting from {hf_dir}, context 32" in result.stdout  # its 64 positions cropped to --block_size=32
    assert "(n_layer=2, n_head=4, n_embd=32)" in result.stdout  # the shape is GPT-2's
    exported = shakespeare / "exported"
    result = run_script("gpt.py", [f"--export_hf={exported}"], shakespeare)
    assert result.returncode == 0, result.stderr

    checkpoint = load_checkpoint(str(shakespeare / "trained_model.pth"), "cpu")
    ours = GPT(GPTConfig(**checkpoint["config"])).eval()
    ours.load_state_dict(checkpoint["model"])
    hf = transformers.GPT2LMHeadModel.from_pretrained(exported).eval()
    idx = torch.randint(50257, (2, 32))
    with torch.no_grad():
        assert (ours(idx)[0] - hf(idx).logits).abs().max().item() < 1e-5
    assert not torch.equal(checkpoint["model"]["wte.weight"], from_pretrained(str(hf_dir)).wte.weight)  # it trained


def test_a_model_trained_from_scratch_exports_with_its_exact_gelu_and_without_biases_as_zeros(shakespeare):
    # from scratch the MLP uses the exact GELU, not GPT-2's tanh one: the export must say so. A model
    # trained with --bias=false has none of the biases GPT-2 has everywhere: they are written as 0
    result = run_script("gpt.py", [*TINY, "--bias=false", "--max_iters=20", "--max_new_tokens=1"], shakespeare)
    assert result.returncode == 0, result.stderr
    exported = shakespeare / "exported"
    assert run_script("gpt.py", [f"--export_hf={exported}"], shakespeare).returncode == 0

    checkpoint = load_checkpoint(str(shakespeare / "trained_model.pth"), "cpu")
    ours = GPT(GPTConfig(**checkpoint["config"])).eval()
    ours.load_state_dict(checkpoint["model"])
    hf = transformers.GPT2LMHeadModel.from_pretrained(exported).eval()
    assert hf.config.activation_function == "gelu"
    assert not ours.config.bias and not any(p.any() for name, p in hf.named_parameters() if name.endswith(".bias"))
    idx = torch.randint(ours.config.vocab_size, (2, 32))
    with torch.no_grad():
        assert (ours(idx)[0] - hf(idx).logits).abs().max().item() < 1e-5


def test_sample_straight_from_a_pretrained_model(hf_dir, tmp_path):
    gpt2_tokenizer_or_skip()
    result = run_script(
        "gpt.py", ["--sample", f"--init_from={hf_dir}", "--num_samples=1", "--max_new_tokens=10"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"sampling {hf_dir} as it is" in result.stdout  # not a model fine-tuned from it
    assert "--- sample 1 of 1 ---" in result.stdout


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--n_head=2", "cannot start from {} with --n_head=2: the saved model has n_head=4"),
        ("--block_size=128", "cannot start from {} with --block_size=128: the saved model has block_size=64"),
        ("--tokenizer=char", "cannot start from {} with --tokenizer=char: the saved model has tokenizer=gpt2"),
    ],
)
def test_fine_tuning_refuses_a_shape_flag_it_would_ignore(hf_dir, shakespeare, flag, message):
    # GPT-2's weights fix the model's shape; --block_size may only crop its context (64 positions here)
    gpt2_tokenizer_or_skip()
    result = run_script("gpt.py", [f"--init_from={hf_dir}", flag, "--max_iters=1"], shakespeare)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert message.format(hf_dir) in result.stderr
    assert not (shakespeare / "trained_model.pth").exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "cannot load GPT-2 weights from"),  # an empty directory
        (
            lambda d: small_gpt2(activation_function="relu").save_pretrained(d),
            "cannot express (activation_function='relu')",
        ),
        (lambda d: small_gpt2(n_inner=40).save_pretrained(d), "cannot express (n_inner=40)"),
        (lambda d: small_bert().save_pretrained(d), "holds a 'bert' model, not GPT-2"),
        # a character model exported with --export_hf: GPT-2's tokenizer would index past its vocabulary
        (lambda d: small_gpt2(vocab_size=65).save_pretrained(d), "has a 65-token vocabulary, not GPT-2's 50,257"),
    ],
)
def test_a_directory_that_is_not_usable_gpt2_gets_one_line(tmp_path, make, message):
    folder = tmp_path / "model"
    folder.mkdir()
    make(folder)
    result = run_script("gpt.py", ["--sample", f"--init_from={folder}"], tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_name_offline_and_not_cached_gets_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    result = run_script("gpt.py", ["--sample", "--init_from=gpt2-medium"], tmp_path)
    assert result.returncode != 0
    assert "--init_from=gpt2-medium: GPT-2's weights are not in the Hugging Face cache" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
