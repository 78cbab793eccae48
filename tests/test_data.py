"""The token cache: a text is tokenized once, into a file beside it, and memory-mapped from then on."""

import json

import numpy as np
import pytest
import tiktoken

from conftest import REPO, TINY, gpt2_tokenizer_or_skip, run_script, train_log
from gpt import UserError, read_pieces

# whitespace runs, CRLF, tabs and multi-byte characters: the places a careless cut changes GPT-2's tokens
TRICKY = "\n  \n\n naïve café — 日本語 🙂\r\n\tX  \nend.\n\n\n   Y\n" * 40
ONE_STEP = [*TINY, "--max_iters=1", "--sample_interval=0", "--num_samples=1", "--max_new_tokens=5"]


@pytest.mark.parametrize("piece_bytes", [5, 64, 1000])
def test_text_read_in_pieces_encodes_to_the_same_gpt2_tokens_as_the_whole(tmp_path, piece_bytes):
    gpt2_tokenizer_or_skip()
    text = (REPO / "input.txt").read_text(encoding="utf-8")[:30_000] + TRICKY
    (tmp_path / "input.txt").write_bytes(text.encode("utf-8"))
    pieces = list(read_pieces(str(tmp_path / "input.txt"), piece_bytes))
    enc = tiktoken.get_encoding("gpt2")
    assert len(pieces) > 20
    text = (tmp_path / "input.txt").read_text(encoding="utf-8")  # as Python reads text: "\r\n" is "\n"
    assert "".join(pieces) == text
    assert [t for ids in enc.encode_ordinary_batch(pieces) for t in ids] == enc.encode_ordinary(text)


def test_a_text_with_windows_line_breaks_is_read_in_bounded_pieces_with_the_same_gpt2_tokens(tmp_path):
    # each "\r\n" follows a space-free line: a piece may end before it, so no piece grows with the file
    gpt2_tokenizer_or_skip()
    text = (REPO / "input.txt").read_text(encoding="utf-8")[:50_000].replace("\n", "\r\n")
    (tmp_path / "input.txt").write_bytes(text.encode("utf-8"))
    pieces = list(read_pieces(str(tmp_path / "input.txt"), 1000))
    enc = tiktoken.get_encoding("gpt2")
    assert len(pieces) > 40 and max(map(len, pieces)) < 2000
    text = (tmp_path / "input.txt").read_text(encoding="utf-8")  # as Python reads text: "\r\n" is "\n"
    assert "\r" not in text and "".join(pieces) == text
    assert [t for ids in enc.encode_ordinary_batch(pieces) for t in ids] == enc.encode_ordinary(text)


@pytest.mark.parametrize("piece_bytes", [3, 10, 4096])
def test_a_bad_byte_is_reported_where_python_finds_it_wherever_the_pieces_end(tmp_path, piece_bytes):
    data = "first line\nzweite Zeile: grüße\n日本語\n".encode() * 3 + b"\xff" + b"more\n"
    (tmp_path / "input.txt").write_bytes(data)
    with pytest.raises(UnicodeDecodeError) as reference:
        data.decode("utf-8")
    line = data[: reference.value.start].count(b"\n") + 1
    with pytest.raises(UserError, match=rf"byte {reference.value.start}, line {line}\)"):
        list(read_pieces(str(tmp_path / "input.txt"), piece_bytes))


def test_a_bad_byte_right_after_a_character_cut_between_pieces_is_reported_on_its_own_line(tmp_path):
    # 4-byte pieces cut 日 (3 bytes) after 2; the next piece holds its last byte, then x, the bad byte, a newline
    data = "ab日".encode() + b"x\xff\nmore\n"
    (tmp_path / "input.txt").write_bytes(data)
    with pytest.raises(UserError, match=r"byte 6, line 1\)"):  # 日 starts at byte 2; \xff is byte 6 of line 1
        list(read_pieces(str(tmp_path / "input.txt"), 4))


def test_the_cache_holds_the_tokens_tiktoken_gives_and_is_reused_on_the_second_start(tmp_path):
    gpt2_tokenizer_or_skip()
    text = (REPO / "input.txt").read_text(encoding="utf-8")[:60_000] + TRICKY
    (tmp_path / "input.txt").write_bytes(text.encode("utf-8"))
    first = run_script("gpt.py", [*ONE_STEP, "--tokenizer=gpt2", "--n_embd=16"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert "tokenizing input.txt once" in first.stdout
    cached = np.fromfile(tmp_path / "input.txt.gpt2.tokens", dtype=np.uint16)
    text = (tmp_path / "input.txt").read_text(encoding="utf-8")  # as Python reads text: "\r\n" is "\n"
    assert cached.tolist() == tiktoken.get_encoding("gpt2").encode_ordinary(text)

    first_log = train_log(tmp_path)
    second = run_script("gpt.py", [*ONE_STEP, "--tokenizer=gpt2", "--n_embd=16"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert "tokenizing" not in second.stdout
    assert train_log(tmp_path) == first_log  # the same tokens, so the same run


def test_an_edited_text_is_tokenized_again_with_its_new_characters(shakespeare):
    first = run_script("gpt.py", ONE_STEP, shakespeare)
    assert first.returncode == 0, first.stderr
    with open(shakespeare / "input.txt", "a", encoding="utf-8") as f:
        f.write("\nA new character: ß\n")
    second = run_script("gpt.py", ONE_STEP, shakespeare)
    assert second.returncode == 0, second.stderr
    assert "tokenizing input.txt once" in second.stdout
    text = (shakespeare / "input.txt").read_text(encoding="utf-8")
    info = json.loads((shakespeare / "input.txt.char.tokens.json").read_text())
    assert info["chars"] == "".join(sorted(set(text)))
    ids = np.fromfile(shakespeare / "input.txt.char.tokens", dtype=np.uint16)
    assert "".join(info["chars"][i] for i in ids) == text


@pytest.mark.parametrize("damage", ["truncate", "garbage_json"])
def test_a_damaged_cache_is_rebuilt_not_trusted(shakespeare, damage):
    assert run_script("gpt.py", ONE_STEP, shakespeare).returncode == 0
    tokens, info = shakespeare / "input.txt.char.tokens", shakespeare / "input.txt.char.tokens.json"
    if damage == "truncate":  # a copy cut short
        tokens.write_bytes(tokens.read_bytes()[:1000])
    else:
        info.write_text("{not json")
    result = run_script("gpt.py", ONE_STEP, shakespeare)
    assert result.returncode == 0, result.stderr
    assert "tokenizing input.txt once" in result.stdout
    assert tokens.stat().st_size == 2 * len((shakespeare / "input.txt").read_text(encoding="utf-8"))


def test_resume_keeps_its_vocabulary_when_the_text_loses_characters(shakespeare):
    first = run_script("gpt.py", [*TINY, "--max_iters=20", "--eval_interval=10", "--sample_interval=0"], shakespeare)
    assert first.returncode == 0, first.stderr
    before = {row["step"]: float(row["val_loss"]) for row in train_log(shakespeare)}
    text = (shakespeare / "input.txt").read_text(encoding="utf-8")
    assert "!" in text and "." in text
    (shakespeare / "input.txt").write_text(text.replace("!", "."), encoding="utf-8")  # one character fewer
    # one more step: resuming re-evaluates step 20 first, now on the changed text
    result = run_script("gpt.py", ["--resume", "--max_iters=21", "--num_samples=1", "--max_new_tokens=5"], shakespeare)
    assert result.returncode == 0, result.stderr
    assert f"({len(set(text))}-token char vocabulary)" in result.stdout
    # the resumed run scores the same model on nearly the same text: ids read in the wrong vocabulary
    # (every character after '!' shifted by one) would make the loss far worse
    after = {row["step"]: float(row["val_loss"]) for row in train_log(shakespeare)}
    assert abs(after["20"] - before["20"]) < 0.05
