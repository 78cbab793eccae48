"""gpt.py run as a user runs it: a subprocess in a scratch folder, checking output, exit code and files."""

import csv
import dataclasses
import math
import subprocess
import sys
from collections import Counter

import pytest
import torch

from conftest import REPO, TINY, gpt2_tokenizer_or_skip, on_the_cpu, patience, run_script, write_shakespeare
from gpt import Settings

TINY_RUN = [*TINY, "--max_iters=300", "--eval_interval=150", "--num_samples=2", "--max_new_tokens=40"]


def sample_text(result) -> str:
    """What the model wrote: the text after the sample header, without the lines about the setup."""
    assert result.returncode == 0, result.stderr
    return result.stdout.split(" ---\n", 1)[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run on 100,000 characters of Shakespeare, shared by the tests below."""
    folder = write_shakespeare(tmp_path_factory.mktemp("trained"))
    result = run_script("gpt.py", TINY_RUN, folder)
    assert result.returncode == 0, result.stderr
    return folder, result


@pytest.mark.smoke
def test_training_writes_checkpoint_log_and_samples(trained):
    folder, result = trained
    assert (folder / "trained_model.pth").exists()
    assert result.stdout.count("--- sample") == 2
    with open(folder / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"step", "tokens", "elapsed_s", "train_loss", "val_loss", "lr"} <= set(rows[0])
    assert [int(r["step"]) for r in rows] == [0, 150, 300]  # the last step is always evaluated
    assert int(rows[-1]["tokens"]) == 300 * 8 * 32  # steps x batch_size x block_size


@pytest.mark.smoke
def test_training_learns_more_than_letter_frequencies(trained):
    folder, _ = trained
    text = (folder / "input.txt").read_text(encoding="utf-8")
    counts = Counter(text)
    # the best loss a model that ignores context can reach: the entropy of single characters
    unigram_entropy = -sum(c / len(text) * math.log(c / len(text)) for c in counts.values())
    with open(folder / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    first, last = float(rows[0]["val_loss"]), float(rows[-1]["val_loss"])
    assert abs(first - math.log(len(counts))) < 0.1  # an untrained model guesses uniformly
    assert last < unigram_entropy - 0.2  # a trained one uses the characters before


@pytest.mark.smoke
def test_sample_uses_the_checkpoint_without_repeating_model_sizes(trained):
    folder, _ = trained
    result = run_script("gpt.py", ["--sample", "--num_samples=1", "--max_new_tokens=30"], folder)
    assert result.returncode == 0, result.stderr
    assert "--- sample 1 of 1 ---" in result.stdout


def test_sample_accepts_the_training_flags_and_refuses_a_shape_it_would_ignore(trained):
    folder, _ = trained
    assert run_script("gpt.py", [*TINY_RUN, "--sample"], folder).returncode == 0  # the training command + --sample
    result = run_script("gpt.py", ["--sample", "--n_layer=8"], folder)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot sample with --n_layer=8: the saved model has n_layer=2" in result.stderr


def test_help_lists_every_setting_with_its_default_and_what_it_does(tmp_path):
    result = run_script("gpt.py", ["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "    n_layer: int = " in result.stdout and "# transformer blocks" in result.stdout  # with its comment
    assert all(f"    {setting.name}: " in result.stdout for setting in dataclasses.fields(Settings))


def test_sampling_into_a_reader_that_stops_early_ends_quietly(trained):
    # `python gpt.py --sample | head -1`: head exits after one line, and the next write finds no reader
    folder, _ = trained
    args = on_the_cpu(["--sample", "--num_samples=1", "--max_new_tokens=5000"])
    command = [sys.executable, str(REPO / "gpt.py"), *args]
    gpt = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    gpt.stdout.readline()
    gpt.stdout.close()  # long before 5,000 tokens are written
    stderr = gpt.stderr.read()
    assert gpt.wait(timeout=patience(120)) == 1  # it did write into the closed pipe, and stopped there
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


def test_same_seed_gives_the_same_sample_and_a_new_seed_another(trained):
    folder, _ = trained
    args = ["--sample", "--num_samples=1", "--max_new_tokens=60", "--prompt=KING"]
    first, again, other = (sample_text(run_script("gpt.py", [*args, f"--seed={s}"], folder)) for s in (1, 1, 2))
    assert first == again
    assert first != other
    assert first.startswith("KING")


def test_prompt_file_is_the_prompt(trained):
    folder, _ = trained
    (folder / "opening.txt").write_text("KING RICHARD:\n", encoding="utf-8")
    args = ["--sample", "--prompt_file=opening.txt", "--num_samples=1", "--max_new_tokens=20"]
    assert sample_text(run_script("gpt.py", args, folder)).startswith("KING RICHARD:\n")


def test_saved_checkpoint_reproduces_the_models_logits_exactly(trained):
    import gpt

    folder, _ = trained
    checkpoint = gpt.load_checkpoint(str(folder / "trained_model.pth"), "cpu")
    model = gpt.GPT(gpt.GPTConfig(**checkpoint["config"])).eval()
    model.load_state_dict(checkpoint["model"])
    path = str(folder / "copy.pth")
    gpt.save_checkpoint(path, {**checkpoint, "model": model.state_dict()})
    reloaded = gpt.GPT(gpt.GPTConfig(**checkpoint["config"])).eval()
    reloaded.load_state_dict(gpt.load_checkpoint(path, "cpu")["model"])
    idx = torch.randint(model.config.vocab_size, (2, 32))
    assert torch.equal(model(idx)[0], reloaded(idx)[0])


def test_the_saved_model_is_the_average_of_the_weights_and_ema_decay_0_saves_them_as_trained(trained, shakespeare):
    import gpt

    def resume_state(folder):
        return gpt.load_checkpoint(str(folder / "trained_model.resume.pth"), "cpu")

    def same(state: dict) -> bool:
        return all(torch.equal(state["model"][k], state["trained_model"][k]) for k in state["model"])

    assert not same(resume_state(trained[0]))  # by default "model", what --sample uses, is the average
    result = run_script("gpt.py", [*TINY, "--max_iters=20", "--eval_interval=10", "--ema_decay=0"], shakespeare)
    assert result.returncode == 0, result.stderr
    assert same(resume_state(shakespeare))


def test_attention_is_the_explicit_math_for_short_contexts_in_bf16_on_a_cpu_and_the_fused_kernel_otherwise(
    trained, shakespeare
):
    import gpt

    bf16_cpu = next(iter(gpt.good_dtypes("cpu"))) == "bfloat16"  # gpt.py trains in bf16 on this CPU
    short = gpt.load_checkpoint(str(trained[0] / "trained_model.pth"), "cpu")
    assert short["config"]["attention"] == ("by_hand" if bf16_cpu else "sdpa")  # context 32
    result = run_script("gpt.py", [*TINY, "--block_size=320", "--max_iters=0", "--max_new_tokens=1"], shakespeare)
    assert result.returncode == 0, result.stderr
    long = gpt.load_checkpoint(str(shakespeare / "trained_model.pth"), "cpu")
    assert long["config"]["attention"] == "sdpa"  # never stores the (T, T) weights: far less memory


def test_sampling_picks_the_attention_for_its_precision_unless_asked(trained):
    import gpt

    path = str(trained[0] / "trained_model.pth")
    assert gpt.load_model(path, "cpu", "auto", torch.bfloat16)[0].blocks[0].attn.attention == "by_hand"
    assert gpt.load_model(path, "cpu", "auto", torch.float32)[0].blocks[0].attn.attention == "sdpa"
    assert gpt.load_model(path, "cpu", "sdpa", torch.bfloat16)[0].blocks[0].attn.attention == "sdpa"  # --attention=


@pytest.mark.smoke
def test_training_with_gpt2_tokenizer(shakespeare):
    gpt2_tokenizer_or_skip()
    args = [*TINY, "--tokenizer=gpt2", "--max_iters=4", "--eval_interval=2", "--max_new_tokens=10"]
    result = run_script("gpt.py", args, shakespeare)
    assert result.returncode == 0, result.stderr
    assert "50,257-token gpt2 vocabulary" in result.stdout
    assert run_script("gpt.py", ["--sample", "--max_new_tokens=10"], shakespeare).returncode == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n_layers=4"], "unknown setting '--n_layers=4': did you mean --n_layer?"),
        (["--n_layer=four"], "--n_layer takes a whole number, not 'four'"),
        (["--learning_rate=fast"], "--learning_rate takes a number"),
        (["--compile=maybe"], "--compile takes true or false"),
        (["n_layer=4"], "'n_layer=4' is not a setting: write settings as --name=value"),
        (["--tokenizer=bpe"], "--tokenizer must be one of char, gpt2, not 'bpe'"),
        (["--gelu=relu"], "--gelu must be one of exact, tanh, not 'relu'"),
        # the head counts offered are the divisors of 30 up to 16
        (["--n_embd=30", "--n_head=4"], "by n_head (4): use one of --n_head=1, 2, 3, 5, 6, 10, 15"),
        (["--input_file=missing.txt"], "cannot read 'missing.txt'"),
        (["--block_size=20000"], "too short for block_size=20000"),
        (["--sample"], "no checkpoint at 'trained_model.pth': train one first with `python gpt.py`"),
    ],
)
def test_bad_input_gets_one_clear_line_and_no_traceback(shakespeare, args, message):
    result = run_script("gpt.py", [*TINY, *args], shakespeare)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (shakespeare / "trained_model.pth").exists()
    assert not (shakespeare / "train_log.csv").exists()


def test_text_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    (tmp_path / "input.txt").write_bytes(b"plain line\nsecond line\n\xff\xfe broken\n")
    result = run_script("gpt.py", TINY, tmp_path)
    assert result.returncode != 0
    assert "'input.txt' is not UTF-8 text (byte 23, line 3)" in result.stderr
