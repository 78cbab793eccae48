"""The aids for watching a model learn: samples while training, epochs, a target loss, sliding windows."""

import numpy as np
import pytest
import torch

from conftest import REPO, TINY, copy_of, run_script, train_log
from gpt import GPT, BatchSampler, GPTConfig, Settings, get_batch


def test_samples_while_training_leave_the_loss_curve_exactly_as_it_was(shakespeare):
    quiet = copy_of(shakespeare, "quiet")
    args = [*TINY, "--max_iters=40", "--eval_interval=10", "--dropout=0.1", "--max_new_tokens=1"]
    watched = run_script("gpt.py", [*args, "--sample_interval=5", "--sample_tokens=30"], shakespeare)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.count("\n  | ") >= 9  # a sample at steps 0, 5, ..., 40
    assert run_script("gpt.py", [*args, "--sample_interval=0"], quiet).returncode == 0
    assert train_log(shakespeare) == train_log(quiet)


def test_target_loss_stops_training_early_saves_and_samples(shakespeare):
    args = [
        *TINY,
        "--max_iters=2000",
        "--eval_interval=10",
        "--target_loss=3.3",
        "--num_samples=1",
        "--max_new_tokens=20",
    ]
    result = run_script("gpt.py", args, shakespeare)
    assert result.returncode == 0, result.stderr
    rows = train_log(shakespeare)
    assert float(rows[-1]["val_loss"]) <= 3.3 < float(rows[-2]["val_loss"])  # stopped at the first eval below
    assert int(rows[-1]["step"]) < 2000
    assert "reached the target val loss 3.3" in result.stdout
    assert "--- sample 1 of 1 ---" in result.stdout
    assert (shakespeare / "trained_model.pth").exists()


def test_epoch_in_the_log_is_tokens_seen_over_training_tokens(shakespeare):
    result = run_script("gpt.py", [*TINY, "--max_iters=30", "--eval_interval=10", "--max_new_tokens=1"], shakespeare)
    assert result.returncode == 0, result.stderr
    training_tokens = int(0.9 * len((shakespeare / "input.txt").read_text(encoding="utf-8")))  # chars = tokens
    assert f"training on the first {training_tokens:,}" in result.stdout
    for row in train_log(shakespeare):
        assert int(row["tokens"]) == int(row["step"]) * 8 * 32  # batch_size x block_size per step
        assert float(row["epoch"]) == pytest.approx(int(row["tokens"]) / training_tokens, abs=5e-4)


@pytest.mark.parametrize("batching, stride", [("random", 0), ("sliding", 0), ("sliding", 5)])
def test_targets_are_the_inputs_shifted_by_exactly_one_token(batching, stride):
    data = np.arange(1000, dtype=np.uint16)  # token i is the number i, so offsets are easy to see
    hp = Settings(batch_size=4, block_size=16, batching=batching, stride=stride)
    sampler = BatchSampler(len(data), hp)
    for _ in range(20):
        x, y = get_batch(data, sampler.next_starts(), hp.block_size, "cpu")
        assert x.shape == y.shape == (4, 16)
        assert torch.equal(y, x + 1)


@pytest.mark.parametrize("stride", [0, 1, 7, 16])
def test_one_epoch_of_sliding_windows_covers_every_training_token(stride):
    data = np.arange(1003, dtype=np.uint16)
    hp = Settings(batch_size=4, block_size=16, batching="sliding", stride=stride)
    sampler = BatchSampler(len(data), hp)
    seen = set()
    for _ in range(-(-len(sampler.windows) // hp.batch_size)):  # the batches of one epoch, rounded up
        x, y = get_batch(data, sampler.next_starts(), hp.block_size, "cpu")
        seen |= set(x.flatten().tolist()) | set(y.flatten().tolist())
    assert seen == set(range(len(data)))


def test_sliding_windows_visit_every_window_once_per_epoch_in_a_new_order():
    hp = Settings(batch_size=5, block_size=16, batching="sliding")
    sampler = BatchSampler(16 * 20 + 1, hp)  # exactly 20 windows, no overlap
    epoch_1 = torch.cat([sampler.next_starts() for _ in range(4)])
    epoch_2 = torch.cat([sampler.next_starts() for _ in range(4)])
    assert sorted(epoch_1.tolist()) == sorted(epoch_2.tolist()) == list(range(0, 320, 16))
    assert not torch.equal(epoch_1, epoch_2)


def test_bias_false_removes_every_bias_and_nothing_else():
    config = dict(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32)
    with_bias, without = GPT(GPTConfig(**config, bias=True)), GPT(GPTConfig(**config, bias=False))
    biases = sum(p.numel() for name, p in with_bias.named_parameters() if name.endswith(".bias"))
    assert not any(name.endswith(".bias") for name, _ in without.named_parameters())
    assert without.num_params() == with_bias.num_params() - biases


def test_repository_text_gives_the_epoch_count_the_readme_quotes():
    # README: the default run's epoch is 256.0 steps of 32 x 128 tokens on the 1,164,872-character text
    text = (REPO / "input.txt").read_text(encoding="utf-8")
    assert len(text) == 1_164_872
    assert int(0.9 * len(text)) / (32 * 128) == pytest.approx(256.0, abs=0.05)
