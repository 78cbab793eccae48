"""Text -> ids -> text, for both tokenizers, against an independent GPT-2 tokenizer."""

import os

import pytest

from conftest import REPO, gpt2_tokenizer_or_skip
from gpt import UserError, check_readable, make_tokenizer


def test_char_tokenizer_round_trips_the_whole_training_text():
    text = (REPO / "input.txt").read_text(encoding="utf-8")
    tokenizer = make_tokenizer("char", text)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.vocab_size == len(set(text))


def test_char_tokenizer_refuses_characters_it_has_never_seen():
    tokenizer = make_tokenizer("char", "abc\n")
    with pytest.raises(UserError, match="'xz'"):
        check_readable(tokenizer, "abxcz")  # what gpt.py and app.py ask before encoding a prompt
    check_readable(tokenizer, "abc")


def test_gpt2_tokenizer_gives_openai_ids():
    gpt2_tokenizer_or_skip()
    tokenizer = make_tokenizer("gpt2")
    assert tokenizer.encode("hello world") == [31373, 995]  # the ids OpenAI's GPT-2 vocabulary gives
    assert tokenizer.vocab_size == 50257


def test_gpt2_tokenizer_matches_hugging_face_on_shakespeare(tmp_path):
    gpt2_tokenizer_or_skip()
    transformers = pytest.importorskip("transformers")
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or pytest.skip("needs TIKTOKEN_CACHE_DIR for the raw files")
    # the two files tiktoken caches are GPT-2's vocab.json and merges.txt, under hashed names
    for name in os.listdir(cache):
        data = open(os.path.join(cache, name), "rb").read()
        (tmp_path / ("vocab.json" if data.startswith(b"{") else "merges.txt")).write_bytes(data)
    reference = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    text = (REPO / "input.txt").read_text(encoding="utf-8")[:20_000] + " naïve café — 日本語 🙂"
    ours = make_tokenizer("gpt2")
    assert ours.encode(text) == reference(text)["input_ids"]
    assert ours.decode(ours.encode(text)) == text
