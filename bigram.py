"""
bigram.py: the simplest language model there is, as the baseline gpt.py has to beat.

    python bigram.py

It predicts the next token from the current token alone, with a table of vocab_size x vocab_size
learned scores. Because it sees one token of context, the best it can ever do is known in advance:
count which token follows which in the training text, and that count table (smoothed, normalised)
is the best bigram model. This script trains the table by gradient descent anyway, the way gpt.py
trains a GPT, and shows the trained loss landing on the count table's loss: the floor for any
model that sees one token. gpt.py's val loss goes far below it, because it reads whole contexts.

The data pipeline (reading, tokenizing, splitting, batching) is imported from gpt.py, not copied.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt import (
    check_at_least,
    check_numbers,
    get_batch,
    load_tokens,
    parse_overrides,
    random_starts,
    run_command_line,
    sample_next_token,
    split_long_enough,
)


@dataclass
class BigramSettings:
    input_file: str = "input.txt"  # the text to train on
    tokenizer: str = "char"  # 'char' or 'gpt2' (a 50,257 x 50,257 table: 10 GB, mind your memory)
    batch_size: int = 32  # sequences per step
    block_size: int = 8  # sequence length; a bigram model only ever looks one token back
    max_iters: int = 3000  # optimizer steps
    learning_rate: float = 0.1  # peak; high is fine: the loss is convex in the table's entries
    eval_interval: int = 500  # print the losses every this many steps
    smoothing: float = 1.0  # pseudo-count added to every cell of the count table (add-one)
    max_new_tokens: int = 300  # length of the sample printed at the end
    seed: int = 1337


class BigramLanguageModel(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)  # row i: scores of the token after i

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table(idx)  # (B, T, vocab_size)

    def loss(self, data: np.ndarray) -> float:
        """Exact mean loss over every pair of neighbouring tokens in data."""
        ids = torch.from_numpy(data.astype(np.int64))
        with torch.no_grad():
            return F.cross_entropy(self(ids[:-1]), ids[1:]).item()


def count_table_loss(
    train_data: np.ndarray, val_data: np.ndarray, vocab_size: int, smoothing: float
) -> float:
    """Val loss of the best bigram model of the training text: its next-token counts, normalised."""
    counts = np.full((vocab_size, vocab_size), smoothing)
    np.add.at(counts, (train_data[:-1], train_data[1:]), 1)  # counts[a, b] += 1 for each "a b"
    probs = counts / counts.sum(axis=1, keepdims=True)
    return float(-np.log(probs[val_data[:-1], val_data[1:]]).mean())


def main(argv: list[str]) -> None:
    s = BigramSettings(**parse_overrides(argv, BigramSettings))
    minimum = dict(batch_size=1, block_size=1, max_iters=0, eval_interval=1, max_new_tokens=0)
    check_at_least(s, {**minimum, "smoothing": 0.0})
    check_numbers(s)  # finite, a seed torch takes, a learning rate above 0
    torch.manual_seed(s.seed)
    generator = torch.Generator().manual_seed(s.seed)
    tokens, tokenizer = load_tokens(s.input_file, s.tokenizer)
    train_data, val_data = split_long_enough(tokens, s.block_size)
    floor = count_table_loss(train_data, val_data, tokenizer.vocab_size, s.smoothing)
    print(f"count table (no training): val loss {floor:.4f}, the floor for any bigram model "
          "of this text")  # fmt: skip

    model = BigramLanguageModel(tokenizer.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, weight_decay=0.0)
    for step in range(s.max_iters + 1):
        if step % s.eval_interval == 0 or step == s.max_iters:
            train_loss, val_loss = model.loss(train_data), model.loss(val_data)
            print(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}")
        if step == s.max_iters:
            break
        for group in optimizer.param_groups:  # decay linearly to 0, to settle into the minimum
            group["lr"] = s.learning_rate * (1 - step / s.max_iters)
        starts = random_starts(len(train_data), s.block_size, s.batch_size, generator)
        x, y = get_batch(train_data, starts, s.block_size, "cpu")
        loss = F.cross_entropy(model(x).view(-1, tokenizer.vocab_size), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    print(f"trained bigram val loss {model.loss(val_data):.4f}, count-table floor {floor:.4f}")

    idx = [tokenizer.start_token]
    for _ in range(s.max_new_tokens):  # sample: each token drawn from the row of the one before
        logits = model(torch.tensor(idx[-1:]))  # (1, vocab_size)
        idx.append(sample_next_token(logits, generator=generator).item())
    print(f"\n--- sample ---\n{tokenizer.decode(idx[1:])}")


if __name__ == "__main__":
    run_command_line(main)  # a missing text, an unknown setting, ...: one line, as gpt.py says it
