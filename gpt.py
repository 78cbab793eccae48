"""
gpt.py: train a GPT on a text file, from scratch, in one file you can read top to bottom.

    python gpt.py                    # train on input.txt, save trained_model.pth, print samples
    python gpt.py --sample           # load trained_model.pth and print samples
    python gpt.py --n_layer=6 --tokenizer=gpt2 --max_iters=500   # override any hyperparameter

Part 1 is the whole idea, in the order the ideas build on each other: hyperparameters, data
and tokenizer, attention, MLP, block, model, optimizer and schedule, training loop, sampling.
Part 2 is the plumbing that makes it a tool: the token cache for big texts, resuming, the loss
plot, GPT-2's own weights in and out, the command line, the hardware and torchrun. main() comes
last and runs it all. A first read can go from Part 1 straight to main().
"""

import atexit
import codecs
import copy
import csv
import ctypes
import dataclasses
import difflib
import inspect
import itertools
import json
import math
import os
import pickle
import shlex
import shutil
import signal
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import BinaryIO, NoReturn

import numpy as np
import tiktoken
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from tqdm import tqdm

# -----------------------------------------------------------------------------
# Hyperparameters: the knobs to edit. Each one can also be set on the command line
# as --name=value (--n_layer=6), without touching the file.


@dataclass
class Hyperparameters:
    # data
    input_file: str = "input.txt"  # the text to train on (UTF-8); any text works
    tokenizer: str = "char"  # 'char': one token per character; 'gpt2': GPT-2's BPE (50,257 tokens)
    # model (the defaults fit a laptop CPU; on a CUDA GPU, CUDA_DEFAULTS below replace them)
    n_layer: int = 4  # transformer blocks stacked on top of each other (2-12)
    n_head: int = 6  # attention heads per block; must divide n_embd (2-12)
    n_embd: int = 192  # width of every token's vector (64-768)
    block_size: int = 128  # context: how many tokens the model sees at once (32-1024)
    dropout: float = 0.0  # fraction of activations zeroed in training (0-0.2; 0 for short runs)
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2 has them
    gelu: str = "exact"  # the MLP's GELU: 'exact', or GPT-2's 'tanh' approximation (see MLP)
    attention: str = "auto"  # 'by_hand': the explicit math; 'sdpa': PyTorch's fused kernel; 'auto': see pick_attention
    # training
    batch_size: int = 32  # sequences per micro-batch: one forward and backward pass (8-64)
    batching: str = "random"  # 'random': windows start anywhere; 'sliding': every stride-th window, once per epoch
    stride: int = 0  # with batching='sliding': tokens between window starts (0 = block_size, no overlap)
    grad_accum_steps: int = 1  # micro-batches per optimizer step, summed over all processes under torchrun
    max_iters: int = 2250  # optimizer steps in the whole run (2250 take about 5 minutes on 2 CPU cores)
    learning_rate: float = 2e-3  # peak learning rate (1e-4 to 3e-3; smaller for bigger models)
    min_lr: float = 2e-4  # learning rate at the end of the cosine decay (about learning_rate / 10)
    warmup_iters: int = 100  # steps over which the learning rate climbs linearly up to learning_rate
    weight_decay: float = 1.0  # AdamW weight decay on weight matrices (often 0.1; 1.0 fights memorising a small text)
    beta1: float = 0.9  # AdamW momentum
    beta2: float = 0.99  # AdamW second-moment decay (0.95-0.999)
    grad_clip: float = 1.0  # clip the gradient norm to this (0 = off)
    ema_decay: float = 0.99  # evaluate and keep a moving average of the weights (0.9-0.999; 0 = the weights as trained)
    eval_interval: int = 250  # evaluate train and val loss every this many steps
    eval_iters: int = 20  # batches averaged per loss estimate (more = less noisy, slower)
    target_loss: float = 0.0  # stop as soon as the val loss is at or below this (0 = run all max_iters)
    sample_interval: int = 250  # print a short sample every this many steps, to watch it learn (0 = never)
    sample_tokens: int = 100  # length of those samples
    seed: int = 1337  # same seed, same run
    # hardware
    device: str = "auto"  # 'auto' picks cuda > mps > cpu; or name one
    dtype: str = "auto"  # 'auto' asks the hardware what it does well; or 'float32', 'bfloat16', 'float16'
    compile: bool = False  # torch.compile the training step (on by default on CUDA; on a CPU it did not pay off)
    # checkpoint and sampling
    init_from: str = ""  # start from OpenAI's GPT-2: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' or a directory
    export_hf: str = ""  # --export_hf=DIR: write out_file as a Hugging Face GPT-2 directory, then stop
    out_file: str = "trained_model.pth"  # best model; train_log.csv and loss.png go beside it
    resume: bool = False  # --resume: continue the run saved beside out_file (trained_model.resume.pth)
    sample: bool = False  # --sample: skip training, load out_file (or with init_from, GPT-2) and print samples
    prompt: str = ""  # text the samples start from ('' = a newline, or GPT-2's <|endoftext|>)
    prompt_file: str = ""  # or read the prompt from this file
    num_samples: int = 2  # how many samples to print (drawn as one batch; a single one streams as it is written)
    max_new_tokens: int = 500  # tokens generated per sample
    temperature: float = 0.8  # <1 is safer and duller, >1 wilder; 0 always takes the likeliest token
    top_k: int = 0  # sample only among the k likeliest tokens (0 = all of them)
    top_p: float = 1.0  # sample only among the likeliest tokens that together have this probability (1 = all)
    kv_cache: bool = True  # reuse each token's keys and values while generating (False: recompute, to compare)


# On a CUDA GPU the classic "baby GPT" replaces the CPU defaults: the model of Karpathy's lecture,
# trained with the learning rates and weight decay of nanoGPT's config/train_shakespeare_char.py.
CUDA_DEFAULTS = dict(
    n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, batch_size=64,
    max_iters=5000, learning_rate=1e-3, min_lr=1e-4, weight_decay=0.1, eval_interval=500, eval_iters=200,
    compile=True,
)  # fmt: skip


class UserError(Exception):
    """Something the user can fix. main() prints it as one line, with no traceback, and exits."""


def fail(message: str) -> NoReturn:
    raise UserError(message)


# -----------------------------------------------------------------------------
# Data and tokenizer: text -> integers the model can read, and back.


class CharTokenizer:
    """One token per distinct character of the training text: tiny vocabulary, long sequences."""

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.vocab_size = len(chars)
        self.stoi = {ch: i for i, ch in enumerate(chars)}
        self.start_token = self.stoi.get("\n", 0)  # samples start on a fresh line (if the text has one)
        self.stop_token = None  # samples run to their full length

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            fail(f"the text has characters this model's vocabulary lacks: {''.join(unknown)!r}")
        return [self.stoi[ch] for ch in text]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def token_bytes(self, token: int) -> bytes:
        return self.chars[token].encode("utf-8")

    def to_dict(self) -> dict:
        return {"kind": "char", "chars": self.chars}


class GPT2Tokenizer:
    """GPT-2's byte-pair encoding (tiktoken): 50,257 tokens, about 4 characters each in English."""

    def __init__(self) -> None:
        try:
            self.enc = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken downloads its files once; offline that fails
            fail(
                f"cannot load GPT-2's tokenizer files ({type(e).__name__}): connect to the internet "
                "once, or set TIKTOKEN_CACHE_DIR to a folder that has them"
            )
        self.vocab_size = self.enc.n_vocab
        self.start_token = self.enc.eot_token  # <|endoftext|> separates documents in GPT-2's data
        self.stop_token = self.enc.eot_token  # ... so a sample ends there

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)  # ordinary: '<|endoftext|>' in a text is just text

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts, num_threads=len(texts))  # in parallel threads

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(ids)  # bytes that are not valid UTF-8 become U+FFFD

    def token_bytes(self, token: int) -> bytes:
        return self.enc.decode_single_token_bytes(token)  # may be part of a character

    def to_dict(self) -> dict:
        return {"kind": "gpt2"}


def make_tokenizer(kind: str, text: str = "", chars: str = "") -> CharTokenizer | GPT2Tokenizer:
    if kind == "char":
        return CharTokenizer(chars or "".join(sorted(set(text))))
    if kind == "gpt2":
        return GPT2Tokenizer()
    fail(f"--tokenizer must be 'char' or 'gpt2', not {kind!r}")


def tokenizer_from(checkpoint: dict) -> CharTokenizer | GPT2Tokenizer:
    info = checkpoint["tokenizer"]
    return make_tokenizer(info["kind"], chars=info.get("chars", ""))


def split_tokens(tokens: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """First 90% of the tokens to train on, last 10% to validate on (contiguous, so no leakage)."""
    n = int(0.9 * len(tokens))
    train_data, val_data = tokens[:n], tokens[n:]
    if len(val_data) < block_size + 1:
        fail(
            f"the text is {len(tokens):,} tokens, too short for block_size={block_size}: the 10% "
            f"validation split needs at least {block_size + 1}; use more text or a smaller --block_size"
        )
    return train_data, val_data


def get_batch(
    data: np.ndarray, starts: torch.Tensor, block_size: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of block_size + 1 tokens beginning at starts: x is each window but its last token,
    y each window but its first, so y[b, t] is the token that follows x[b, :t+1]."""
    windows = torch.stack([torch.from_numpy(data[i : i + block_size + 1].astype(np.int64)) for i in starts])
    if device.startswith("cuda"):  # from page-locked memory the copy runs while the GPU computes
        windows = windows.pin_memory().to(device, non_blocking=True)
    else:
        windows = windows.to(device)
    return windows[:, :-1], windows[:, 1:]  # x and y, (B, T) each


def random_starts(n_tokens: int, block_size: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """batch_size random positions at which a whole window of block_size + 1 tokens fits."""
    return torch.randint(n_tokens - block_size, (batch_size,), generator=generator)


class BatchSampler:
    """Where each training window starts, drawn from its own random generator so that evaluating or
    sampling never changes which batches training sees.

    'random': anywhere, independently each time (the classic way: simple, and over a long run it
    sees everything). 'sliding': every stride-th position plus one window flush with the end, so
    an epoch covers every token, visited in a new shuffled order each epoch.
    """

    def __init__(self, n_tokens: int, hp: Hyperparameters) -> None:
        self.n_tokens, self.block_size, self.batch_size = n_tokens, hp.block_size, hp.batch_size
        self.random = hp.batching == "random"
        self.last = n_tokens - hp.block_size - 1  # the last position a whole window can start at
        self.windows = torch.cat([torch.arange(0, self.last, hp.stride or hp.block_size), torch.tensor([self.last])])
        self.queue = torch.empty(0, dtype=torch.long)  # starts still to visit in this epoch
        self.generator = torch.Generator().manual_seed(hp.seed)

    def next_starts(self) -> torch.Tensor:
        if self.random:
            return random_starts(self.n_tokens, self.block_size, self.batch_size, self.generator)
        while len(self.queue) < self.batch_size:  # a new epoch: every window once, in a new order
            order = torch.randperm(len(self.windows), generator=self.generator)
            self.queue = torch.cat([self.queue, self.windows[order]])
        starts, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size :]
        return starts

    def state_dict(self) -> dict:
        return {"rng": self.generator.get_state(), "queue": self.queue}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["rng"])
        self.queue = state["queue"][state["queue"] <= self.last]  # the text may have changed since


# -----------------------------------------------------------------------------
# The model: GPT-2's architecture, layer by layer.


@dataclass
class GPTConfig:
    """The model's shape. Its defaults are GPT-2's (and what older checkpoints used); Hyperparameters
    picks faster ones for a model trained from scratch: the exact GELU, and attention by hardware."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    gelu: str = "tanh"  # 'tanh' or 'exact' (see MLP)
    attention: str = "sdpa"  # 'sdpa' or 'by_hand': the same math (see below)


def attention_by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
    """Causal attention spelled out: what F.scaled_dot_product_attention computes, fused, in one call.

    Every token emits a query (what it is looking for), a key (what it offers) and a value (what
    it passes on). Several heads, each with its own q, k and v, let a token look for several
    things at once.

    q is (B, n_head, T, head_size) for the newest T tokens; k and v are (B, n_head, T_all, head_size)
    for all tokens so far (T_all = T, except when generating with a KV cache). Each position mixes
    the values of itself and the positions before it, weighted by how well its query matches their keys.
    """
    T, T_all, head_size = q.size(-2), k.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_size)  # (B, n_head, T, T_all)
    # dividing by sqrt(head_size) keeps the scores' spread near 1, so softmax does not saturate
    # a token may not look at tokens after it: -inf added to those scores gives them weight 0
    future = torch.full((T, T_all), float("-inf"), dtype=scores.dtype, device=q.device)
    future = future.triu(diagonal=T_all - T + 1)  # -inf above the diagonal, 0 on and below it
    scores = scores + future  # (B, n_head, T, T_all)
    weights = F.softmax(scores, dim=-1)  # (B, n_head, T, T_all), each row sums to 1
    weights = F.dropout(weights, dropout)  # randomly ignore some of the tokens attended to, in training
    return weights @ v  # (B, n_head, T, head_size)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head  # each head works on n_embd / n_head of the vector
        self.dropout = config.dropout
        self.attention = config.attention
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # mixes the heads back
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, C = x.size()
        head_size = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, head_size).transpose(1, 2)  # (B, n_head, T, head_size)
        k = k.view(B, T, self.n_head, head_size).transpose(1, 2)  # (B, n_head, T, head_size)
        v = v.view(B, T, self.n_head, head_size).transpose(1, 2)  # (B, n_head, T, head_size)
        # cache (only when generating, see GPT.stream): None = no cache (training); {} = start one with
        # these tokens; filled = these tokens follow the cached ones. Each token's k and v are computed once.
        if cache is not None:
            if cache:
                k = torch.cat([cache["k"], k], dim=2)  # (B, n_head, past + T, head_size)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        dropout = self.dropout if self.training else 0.0
        # the same math either way (a test proves it); which one is faster depends on the hardware (see pick_attention)
        if self.attention == "by_hand":
            y = attention_by_hand(q, k, v, dropout)
        else:
            # fused into one kernel that never stores the (T, T) weights: flash attention on GPUs.
            # GPT.stream feeds either a whole window with an empty cache, or one new token (T == 1),
            # which may look at all the cached ones and needs no mask. (T > 1 on top of a cache
            # would need an explicit mask: is_causal aligns top-left.)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): the heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Per-token computation: widen 4x, GELU, narrow back. Attention mixes tokens; this thinks about each."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GELU(x) = x * P(X <= x) for a standard normal X: a smooth ReLU. GPT-2 used the GELU paper's
        # tanh approximation of it, and its weights expect that; models trained from scratch here use
        # the exact one. The two curves differ by at most 0.0005, and on bf16 CPUs the exact one is
        # 3-4x faster.
        self.gelu = nn.GELU(approximate="tanh" if config.gelu == "tanh" else "none")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One transformer block. Pre-LayerNorm: normalise, transform, then add back onto the residual stream."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        # the residual adds give gradients a straight path from the loss to every layer
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # position embeddings, learned
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: reading a token in and writing it out share one matrix (fewer parameters,
        # and a better model for the same size: https://arxiv.org/abs/1608.05859)
        self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # every block adds its output onto the residual stream twice; scaling those projections by
        # 1/sqrt(2 * n_layer) keeps the stream's variance from growing with depth (GPT-2 paper, 2.3)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix counts once

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: list | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Without targets: (logits, None), the logits (B, T, vocab_size) scoring every possible next
        token after each position of idx (B, T). With targets (B, T): (None, the mean loss). The
        logits are then never built whole (see loss below), so there are none to return.

        With a cache (one dict per block), idx continues the tokens the cache has already seen.
        """
        B, T = idx.size()
        past = cache[0]["k"].size(2) if cache and cache[0] else 0  # tokens already in the cache
        if past + T > self.config.block_size:
            raise ValueError(f"{past + T} tokens is more than block_size={self.config.block_size}")
        pos = torch.arange(past, past + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, n_embd)
        for i, block in enumerate(self.blocks):
            x = block(x, cache[i] if cache is not None else None)
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x), None  # (B, T, vocab_size): a score for every possible next token
        # (B * T, n_embd) and (B * T,); reshape, not view: targets is a strided slice of the batch
        return None, self.loss(x.view(B * T, -1), targets.reshape(B * T))

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """F.cross_entropy(self.lm_head(hidden), targets): hidden is (N, n_embd), targets (N,).

        Cross-entropy is minus the log of the probability the model gave the true next token,
        averaged over the N positions; a model guessing uniformly scores ln(vocab_size).

        This computes exactly that (a test checks the loss and its gradients), in pieces, to save
        memory. The scores lm_head(hidden) are big: for GPT-2's 50,257 tokens and a batch of
        4 x 1024 they take 0.8 GB in fp32, and the loss and its gradient hold several copies. So
        they are computed a chunk of tokens at a time, under activation checkpointing (nothing
        goes to disk): each chunk's scores are dropped as soon as its loss is known, and recomputed
        in the backward pass. Memory for one chunk, for the price of one more lm_head matmul. A
        character vocabulary fits the whole batch in one chunk.
        """
        chunk_tokens = max(1, 2**24 // self.config.vocab_size)  # tokens whose fp32 scores take 64 MB

        def chunk_loss(hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            # the softmax inside cross_entropy runs in fp32 (.float()): in bf16 its sum over
            # thousands of scores would lose precision
            return F.cross_entropy(self.lm_head(hidden).float(), targets, reduction="sum")

        total = sum(
            # use_reentrant=False: the variant PyTorch recommends, which works with DDP and compile
            torch.utils.checkpoint.checkpoint(
                chunk_loss, hidden[i : i + chunk_tokens], targets[i : i + chunk_tokens], use_reentrant=False
            )
            for i in range(0, len(hidden), chunk_tokens)
        )
        return total / len(hidden)

    @torch.no_grad()
    def stream(
        self, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True, **sampling
    ) -> Iterator[torch.Tensor]:
        """Yield max_new_tokens new tokens (B, 1), one at a time, each sampled after the tokens before it.

        With the KV cache, the context window is encoded once and every new token costs one
        token's worth of compute. Positions are absolute (learned wpe), so cached keys cannot slide
        along when the text outgrows block_size: then the window drops its oldest quarter and is
        encoded afresh. That costs one full pass every block_size / 4 tokens, and the model sees
        between 3/4 and all of block_size tokens. Without the cache the same windows are re-encoded
        on every step, so use_cache changes the speed, not the text (up to floating-point rounding).
        """
        start, cache = max(0, idx.size(1) - self.config.block_size), None  # the window is idx[:, start:]
        for _ in range(max_new_tokens):
            if idx.size(1) - start > self.config.block_size:  # window full: drop its oldest quarter
                start, cache = idx.size(1) - self.config.block_size * 3 // 4, None
            if cache:
                logits, _ = self(idx[:, -1:], cache=cache)  # only the newest token is new to the cache
            else:
                cache = [{} for _ in self.blocks] if use_cache else None
                logits, _ = self(idx[:, start:], cache=cache)  # encode the whole window
            next_token = sample_next_token(logits[:, -1, :].float(), **sampling)  # (B, 1); see Sampling below
            idx = torch.cat([idx, next_token], dim=1)
            yield next_token

    def generate(self, idx: torch.Tensor, max_new_tokens: int, **options) -> torch.Tensor:
        """idx (B, T) followed by max_new_tokens sampled tokens: (B, T + max_new_tokens)."""
        return torch.cat([idx, *self.stream(idx, max_new_tokens, **options)], dim=1)


# -----------------------------------------------------------------------------
# Optimizer and learning-rate schedule.


def make_optimizer(model: GPT, hp: Hyperparameters, device: str) -> torch.optim.AdamW:
    # Weight decay pulls weights towards zero. It regularises the matrices (and embeddings) that do
    # the work; biases and LayerNorm gains are few, cannot overfit much, and their scale matters.
    # The CPU default, 1.0, is ten times the usual 0.1: a 5-minute run reads its 1 MB text 9 times
    # and starts memorising it; the stronger pull keeps it learning what holds for text it has not seen.
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": hp.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=hp.learning_rate, betas=(hp.beta1, hp.beta2), fused=fused_adamw(device))


def fused_adamw(device: str) -> bool:
    """One kernel for the whole AdamW update instead of several per tensor: 3.5x faster updates on a CPU."""
    return device.split(":")[0] in ("cpu", "cuda")  # not mps: PyTorch 2.4 has no fused AdamW for Apple GPUs


def get_lr(step: int, hp: Hyperparameters) -> float:
    """Linear warm-up (big early updates with untuned Adam statistics are harmful), then cosine decay."""
    if step < hp.warmup_iters:
        return hp.learning_rate * (step + 1) / hp.warmup_iters
    progress = min(1.0, (step - hp.warmup_iters) / max(1, hp.max_iters - hp.warmup_iters))
    return hp.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (hp.learning_rate - hp.min_lr)


@torch.no_grad()
def update_average(averaged: GPT, model: GPT, step: int, ema_decay: float) -> None:
    """Move the averaged weights 1 - decay of the way towards the trained ones, after every step.

    Each step's update is noisy, and the weights jitter around where training is heading; an
    exponential moving average of them sits nearer the middle and scores a lower val loss (see the
    README). The first weights are worth little, so the memory starts short, decay (1 + step) /
    (10 + step) as in TensorFlow's ExponentialMovingAverage, and grows to ema_decay (0.99: roughly
    the last 100 steps, from step 890 on). With ema_decay=0 there is no average: averaged is model.
    """
    if averaged is model:
        return
    decay = min(ema_decay, (1 + step) / (10 + step))
    for average, weight in zip(averaged.parameters(), model.parameters()):
        average.lerp_(weight, 1 - decay)


# -----------------------------------------------------------------------------
# Training: evaluation, checkpoints, and the loop itself.


@torch.no_grad()
def estimate_loss(model: GPT, splits: dict, hp: Hyperparameters, device: str, autocast) -> dict:
    """Mean loss over eval_iters batches of each split, in eval mode (no dropout).

    The batches come from a generator seeded the same way every time, so every evaluation scores
    the same text and the curve shows the model changing, not the batches.
    """
    model.eval()
    losses = {}
    for name, data in splits.items():
        generator = torch.Generator().manual_seed(hp.seed + 1)
        total = 0.0
        for _ in range(hp.eval_iters):
            starts = random_starts(len(data), hp.block_size, hp.batch_size, generator)
            x, y = get_batch(data, starts, hp.block_size, device)
            with autocast:
                _, loss = model(x, y)
            total += loss.item()
        losses[name] = total / hp.eval_iters
    model.train()
    return losses


def save_checkpoint(path: str, checkpoint: dict) -> None:
    # Write a temporary file, force it to disk, then rename it over the old one. The rename is
    # atomic, so a crash or a kill at any moment leaves either the old file or the new one, never half.
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a read-only folder, ...
        fail(f"cannot save {path!r} ({e.strerror}): free some space, or pick another --out_file")


def load_checkpoint(path: str, device: str) -> dict:
    if not os.path.exists(path):
        fail(f"no checkpoint at {path!r}: train one first with `python gpt.py`")
    damaged = f"{path!r} is damaged or not a PyTorch checkpoint (a crash mid-copy?): train again or use another"
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        fail(damaged)
    try:
        # weights_only: accept tensors and plain data only, so loading a file can never run its code
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        fail(f"refused to load {path!r}: it holds Python objects that could run code; use only checkpoints you trust")
    except Exception:
        fail(damaged)
    if not isinstance(checkpoint, dict) or not {"model", "config", "tokenizer"} <= checkpoint.keys():
        fail(f"{path!r} is a PyTorch file but not a gpt.py checkpoint (no model config or tokenizer in it)")
    return checkpoint


def load_data(hp: Hyperparameters, state: dict | None) -> tuple[np.ndarray, np.ndarray, CharTokenizer | GPT2Tokenizer]:
    """The training and validation tokens, and the tokenizer that reads them."""
    # load_tokens (in Part 2) is tokenizer.encode(open(path).read()), kept in a file beside the text
    tokens, tokenizer = load_tokens(hp.input_file, state["tokenizer"]["kind"] if state else hp.tokenizer)
    if state:  # a resumed run keeps its vocabulary: characters the text lost since are fine, new ones refused
        saved = tokenizer_from(state)
        if saved.to_dict() != tokenizer.to_dict():  # a char vocabulary: map the text's ids to the saved ones
            # new_to_saved[i] is the saved id of the text's character i (a text now using 'ac', saved 'abc': [0, 2])
            new_to_saved = np.array(saved.encode(tokenizer.chars), dtype=np.uint16)
            tokens = new_to_saved[tokens]
        tokenizer = saved
    train_data, val_data = split_tokens(tokens, hp.block_size)
    tokenizer.encode(hp.prompt)  # characters the model cannot read: say so now, not at the first sample
    vocabulary = f"{tokenizer.vocab_size:,}-token {tokenizer.to_dict()['kind']}"
    batches = len(tokens) // (hp.batch_size * hp.block_size)
    print(
        f"data: {len(tokens):,} tokens of {hp.input_file} ({vocabulary} vocabulary) = {batches:,} batches of "
        f"{hp.batch_size} x {hp.block_size}; training on the first {len(train_data):,}, validating on the last "
        f"{len(val_data):,}"
    )
    return train_data, val_data, tokenizer


def train_step(
    train_model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    batches: list[tuple[torch.Tensor, torch.Tensor]], grad_clip: float, autocast,
) -> torch.Tensor:  # fmt: skip
    """One optimizer step on this process's micro-batches (x, y): forward, backward, clip, AdamW.
    Returns their mean loss, the one the progress bar shows.

    autocast runs the forward pass's matmuls in bf16 or fp16 while the weights stay fp32 (main()
    builds it once; in fp32 it does nothing). scaler matters only for fp16: it multiplies the loss so
    that small gradients do not round to 0, and divides them back before clipping; for bf16 and fp32
    its calls do nothing. Under torchrun, train_model is wrapped in DistributedDataParallel (DDP),
    which averages the gradients of all processes during backward().
    """
    ddp = isinstance(train_model, nn.parallel.DistributedDataParallel)
    mean_loss = 0.0
    for i, (x, y) in enumerate(batches):
        last = i == len(batches) - 1
        # under DDP, share gradients between processes once per step, after the last micro-batch
        with train_model.no_sync() if ddp and not last else nullcontext():
            with autocast:
                _, loss = train_model(x, y)
            # gradients add up over micro-batches (and DDP averages them over processes): dividing
            # by the number of micro-batches makes the result the mean over the whole batch
            scaler.scale(loss / len(batches)).backward()
        mean_loss = mean_loss + loss.detach() / len(batches)
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        torch.nn.utils.clip_grad_norm_(train_model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return mean_loss


def train(
    hp: Hyperparameters,
    device: str,
    dtype: torch.dtype,
    autocast,
    state: dict | None,
    pretrained: GPT | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[GPT, CharTokenizer | GPT2Tokenizer]:
    """Train from scratch, from GPT-2's weights (pretrained, --init_from), or from a saved state
    (--resume), up to max_iters. Returns the model with the best val loss (other ranks: the last
    weights) and its tokenizer.

    Under torchrun, world_size processes each run this same function; rank 0 also logs and saves.
    """
    master = rank == 0
    torch.manual_seed(hp.seed)  # the initial weights and the dropout masks
    attention = pick_attention(hp.attention, device, dtype, hp.block_size)
    train_data, val_data, tokenizer = load_data(hp, state)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=hp.block_size, n_layer=hp.n_layer, n_head=hp.n_head,
                       n_embd=hp.n_embd, dropout=hp.dropout, bias=hp.bias, gelu=hp.gelu,
                       attention=attention)  # fmt: skip
    sampler = BatchSampler(len(train_data), hp)
    tokens_per_step = hp.batch_size * hp.block_size * hp.grad_accum_steps
    if sampler.random:
        print(f"one epoch (as many tokens as the training split) = {len(train_data) / tokens_per_step:,.1f} steps")
    else:
        epoch_steps = len(sampler.windows) / (hp.batch_size * hp.grad_accum_steps)
        stride = hp.stride or hp.block_size
        print(f"one epoch = {len(sampler.windows):,} sliding windows, {stride} apart = {epoch_steps:,.1f} steps")
    model = (GPT(config) if pretrained is None else pretrained).to(device)
    optimizer = make_optimizer(model, hp, device)
    # the weights that are evaluated, kept and sampled: a moving average (see update_average), or
    # with ema_decay=0 the trained weights themselves, which saves a copy (0.5 GB for GPT-2 124M)
    averaged = copy.deepcopy(model).requires_grad_(False) if hp.ema_decay else model
    start_step, best_val_loss, elapsed_before = 0, float("inf"), 0.0
    if state:  # --resume: put the saved run back exactly as it stopped (restore, in Part 2)
        start_step, best_val_loss, elapsed_before = restore(state, model, averaged, optimizer, sampler, hp, device)
    shape = f"n_layer={config.n_layer}, n_head={config.n_head}, n_embd={config.n_embd}"
    print(f"model: {model.num_params():,} parameters ({shape}, {attention} attention)")  # see pick_attention
    # fp16 has a narrow range: small gradients underflow to 0 unless the loss is scaled up first.
    # bf16 has fp32's range, so it needs no scaler (enabled=False makes the scaler a no-op).
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=dtype == torch.float16)
    if state and state.get("scaler"):  # fp16 only: the loss scale it had found
        scaler.load_state_dict(state["scaler"])
    # the compiled model runs the training step; evaluation, sampling and saving use the plain one
    train_model = torch.compile(model) if hp.compile else model
    if hp.compile:
        print("compiling the training step: the first step waits for it (--compile=False skips this)")
    if world_size > 1:  # averages the gradients of all processes during backward()
        train_model = nn.parallel.DistributedDataParallel(train_model)
    log_path = os.path.join(os.path.dirname(hp.out_file), "train_log.csv")
    log_file, log = open_log(log_path if master else os.devnull, start_step if state else None)
    start_time = time.time()  # training time, for the log and for --resume's file

    def model_file(step: int) -> dict:
        """What --sample needs: the weights and everything that says how to read them."""
        return {"model": averaged.state_dict(), "config": dataclasses.asdict(config),
                "tokenizer": tokenizer.to_dict(), "step": step, "best_val_loss": best_val_loss,
                "hyperparameters": dataclasses.asdict(hp)}  # fmt: skip

    def save_state(step: int) -> None:
        """Everything --resume needs to continue as if the run had never stopped: the model file and more."""
        if master:
            save_checkpoint(resume_path(hp.out_file), {
                **model_file(step), "trained_model": model.state_dict(),  # "model" is the average
                "optimizer": optimizer.state_dict(), "sampler": sampler.state_dict(),
                "scaler": scaler.state_dict(), "elapsed_s": elapsed_before + time.time() - start_time,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": [torch.cuda.get_rng_state(device)] if device.startswith("cuda") else [],
            })  # fmt: skip

    def evaluate(step: int, lr: float) -> bool:
        """Score both splits, log the scores, keep the model if its val loss is the best yet.
        Returns whether the val loss reached --target_loss."""
        nonlocal best_val_loss
        losses = estimate_loss(averaged, {"train": train_data, "val": val_data}, hp, device, autocast)
        # every process scores the same batches with the same weights, so their val losses differ only
        # by rounding (GPUs of different kinds round differently). All take rank 0's, so all keep the
        # same best model and stop at --target_loss together: one stopping alone would leave the rest waiting
        if world_size > 1:
            val = torch.tensor(losses["val"], dtype=torch.float64, device=device)  # float64: the exact Python float
            torch.distributed.broadcast(val, src=0)
            losses["val"] = val.item()
        tokens = step * tokens_per_step
        elapsed = elapsed_before + time.time() - start_time
        log.writerow({"step": step, "tokens": tokens, "epoch": f"{tokens / len(train_data):.3f}",
                      "elapsed_s": f"{elapsed:.1f}", "train_loss": f"{losses['train']:.4f}",
                      "val_loss": f"{losses['val']:.4f}", "lr": f"{lr:.3e}"})  # fmt: skip
        log_file.flush()
        tqdm.write(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        # out_file keeps the best model, lean: no optimizer state. Step 0 is left out (it has not trained
        # yet, and saving it would replace what an earlier run left in out_file), unless the run ends
        # there (--max_iters=0, or --target_loss met at once): every run ends with a checkpoint
        reached = losses["val"] <= hp.target_loss
        last = step == hp.max_iters or reached
        if losses["val"] < best_val_loss and (step > 0 or last):
            best_val_loss = losses["val"]
            if master:
                save_checkpoint(hp.out_file, model_file(step))
        return reached

    interrupted = False

    def on_ctrl_c(signum: int, frame) -> None:
        # finish the current step, so the saved state is whole; a second Ctrl-C stops at once
        nonlocal interrupted
        interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, on_ctrl_c)
    progress = tqdm(total=hp.max_iters, initial=start_step, unit="step", mininterval=1.0, disable=not master)
    for step in range(start_step, hp.max_iters + 1):
        stop = interrupted
        if world_size > 1:  # every process must stop at the same step, or the others would wait forever
            anyone = torch.tensor(float(interrupted), device=device)
            torch.distributed.all_reduce(anyone, op=torch.distributed.ReduceOp.MAX)
            stop = bool(anyone.item())  # (a Ctrl-C arriving after this process sent 0 stops the next step)
        if stop:
            save_state(step)
            progress.close()
            print(f"interrupted at step {step}; saved {resume_path(hp.out_file)}")
            print(f"to continue: {resume_command(hp.out_file, world_size)}")
            raise SystemExit(130)  # the exit code of a program stopped by Ctrl-C
        lr = get_lr(step, hp)
        for group in optimizer.param_groups:
            group["lr"] = lr

        if step % hp.eval_interval == 0 or step == hp.max_iters:
            if step > 0:  # (at step 0 there is nothing to resume, and an earlier run's file would be lost)
                save_state(step)  # --resume's file; a run resumed from here evaluates this step again
            if evaluate(step, lr):  # the val loss reached --target_loss
                tqdm.write(f"reached the target val loss {hp.target_loss} at step {step}: stopping early")
                break
        if hp.sample_interval and step % hp.sample_interval == 0 and master:
            print_sample_while_training(averaged, tokenizer, hp, autocast)
        if step == hp.max_iters:
            break  # the last step only evaluates, so the run always ends on a measured checkpoint

        t0 = time.time()
        # every process draws every micro-batch and trains on its share (micro-batches rank,
        # rank + world_size, ...), so a step sees the same batches however many processes run
        starts = [sampler.next_starts() for _ in range(hp.grad_accum_steps)][rank::world_size]
        batches = [get_batch(train_data, s, hp.block_size, device) for s in starts]
        loss = train_step(train_model, optimizer, scaler, batches, hp.grad_clip, autocast)
        update_average(averaged, model, step, hp.ema_decay)
        loss = loss.item()  # waits for the step to finish (GPUs run asynchronously) before reading the clock
        if not math.isfinite(loss):
            fail(
                f"the loss became {loss} at step {step + 1}: the run diverged; try a lower --learning_rate. "
                "Nothing was saved after it went bad"
            )
        tokens_per_sec = tokens_per_step / (time.time() - t0)
        epoch = (step + 1) * tokens_per_step / len(train_data)
        progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", epoch=f"{epoch:.2f}", tok_s=f"{tokens_per_sec:,.0f}",
                             refresh=False)  # fmt: skip
        progress.update()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    progress.close()
    log_file.close()
    if not master:
        return model, tokenizer
    print(f"done in {time.time() - start_time:.0f} s; best val loss {best_val_loss:.4f}, saved to {hp.out_file}")
    plot_losses(log_path)
    model.load_state_dict(load_checkpoint(hp.out_file, device)["model"])  # sample from the best model
    return model, tokenizer


# -----------------------------------------------------------------------------
# Sampling: turn the trained model into text.


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row of logits (B, vocab_size): returns (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # greedy: always the likeliest
    logits = logits / temperature  # < 1 sharpens the distribution, > 1 flattens it
    if top_k > 0:  # keep the k likeliest tokens
        kth_best = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p < 1.0:  # nucleus: keep the smallest set of likeliest tokens whose probabilities reach top_p
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the likelier tokens
        sorted_probs[mass_before >= top_p] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # renormalises by itself


def sampling_options(hp: Hyperparameters) -> dict:
    return dict(temperature=hp.temperature, top_k=hp.top_k, top_p=hp.top_p)


def print_sample_while_training(
    model: GPT, tokenizer: CharTokenizer | GPT2Tokenizer, hp: Hyperparameters, autocast
) -> None:
    """A short sample from the same prompt and seed each time, to watch gibberish turn into text.

    Sampling uses its own random generator and no dropout, so training goes on exactly as it
    would without it: the loss curve is identical either way.
    """
    with autocast:
        pieces = generate_text(model, tokenizer, hp.prompt, 1, hp.sample_tokens, hp.seed, **sampling_options(hp))
        text = "".join(piece for [piece] in pieces)  # one sample: each yield is a list of one piece
    tqdm.write("  | " + text.strip("\n").replace("\n", "\n  | "))
    model.train()  # generate_text switched to eval mode


def generate_text(
    model: GPT,
    tokenizer: CharTokenizer | GPT2Tokenizer,
    prompt: str,
    num_samples: int,
    max_new_tokens: int,
    seed: int,
    use_cache: bool = True,
    **sampling,
) -> Iterator[list[str]]:
    """Yield each sample's new text, piece by piece: first the prompt, then one piece per new token.

    A GPT-2 token can end halfway through a multi-byte character, so the bytes go through an
    incremental UTF-8 decoder, which holds back an unfinished character until its last byte arrives.
    A sample ends at its tokenizer's stop token (GPT-2's <|endoftext|>) or after max_new_tokens.
    """
    model.eval()
    device = next(model.parameters()).device
    prompt_ids = tokenizer.encode(prompt) if prompt else [tokenizer.start_token]
    idx = torch.tensor([prompt_ids] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)  # same seed, same text
    decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(num_samples)]
    done = [False] * num_samples
    yield [prompt] * num_samples
    for next_tokens in model.stream(idx, max_new_tokens, use_cache, generator=generator, **sampling):
        pieces = []
        for i, token in enumerate(next_tokens[:, 0].tolist()):
            done[i] = done[i] or token == tokenizer.stop_token
            pieces.append("" if done[i] else decoders[i].decode(tokenizer.token_bytes(token)))
        yield pieces
        if all(done):
            break
    yield [decoder.decode(b"", final=True) for decoder in decoders]  # whatever bytes are left


def print_samples(model: GPT, tokenizer: CharTokenizer | GPT2Tokenizer, hp: Hyperparameters, autocast) -> None:
    """One sample streams to the terminal as it is generated; several are drawn as a batch, then printed."""
    texts, streaming = [""] * hp.num_samples, hp.num_samples == 1
    if streaming:
        print("\n--- sample 1 of 1 ---")
    with autocast:
        for pieces in generate_text(model, tokenizer, hp.prompt, hp.num_samples, hp.max_new_tokens, hp.seed,
                                    hp.kv_cache, **sampling_options(hp)):  # fmt: skip
            texts = [text + piece for text, piece in zip(texts, pieces)]
            if streaming:
                print(pieces[0], end="", flush=True)
    if streaming:
        print()
    else:
        for i, text in enumerate(texts):
            print(f"\n--- sample {i + 1} of {hp.num_samples} ---\n{text}")


def load_model(
    path: str, device: str, attention: str = "auto", dtype: torch.dtype = torch.float32
) -> tuple[GPT, CharTokenizer | GPT2Tokenizer, dict]:
    """A model gpt.py saved: its shape and tokenizer come from the file, its attention suits dtype."""
    checkpoint = load_checkpoint(path, device)
    try:
        config = GPTConfig(**checkpoint["config"])
        config.attention = pick_attention(attention, device, dtype, config.block_size)  # the speed, not the math
        model = GPT(config).to(device)
        model.load_state_dict(checkpoint["model"])
    except (TypeError, KeyError, RuntimeError) as e:
        fail(f"{path!r} holds weights that do not fit the model its config describes ({type(e).__name__})")
    return model, tokenizer_from(checkpoint), checkpoint


def load_for_sampling(
    hp: Hyperparameters, device: str, dtype: torch.dtype
) -> tuple[GPT, CharTokenizer | GPT2Tokenizer]:
    """The model and tokenizer saved in out_file (or GPT-2 itself): no need to repeat the model's sizes."""
    if hp.init_from:
        print(f"sampling {hp.init_from} as it is (to sample a model fine-tuned from it, drop --init_from)")
        attention = pick_attention(hp.attention, device, dtype, 1024)  # GPT-2's context
        return from_pretrained(hp.init_from, attention=attention).to(device), make_tokenizer("gpt2")
    model, tokenizer, checkpoint = load_model(hp.out_file, device, hp.attention, dtype)
    print(f"loaded {hp.out_file}: step {checkpoint.get('step')}, val loss {checkpoint.get('best_val_loss', 0):.4f}")
    return model, tokenizer


# =============================================================================
# Part 2: the plumbing that makes Part 1 a tool (see the top of the file). Part 1 calls each of these
# functions by a name that says what it does, so a first read can skip straight to main().
# =============================================================================


# -----------------------------------------------------------------------------
# Reading and tokenizing a text of any size. The idea is one line,
# tokens = tokenizer.encode(open(path).read()); these functions do the same in 4 MB pieces and
# keep the tokens in a file beside the text, so a text larger than memory trains and the second
# start is instant.


def open_text(path: str) -> BinaryIO:
    if os.path.exists(path) and not os.path.isfile(path):  # a folder, or a pipe (the text is read twice)
        fail(f"{path!r} is not a file: put your training text in a file and pass --input_file=PATH")
    try:
        return open(path, "rb")
    except OSError as e:
        fail(f"cannot read {path!r} ({e.strerror}): put your training text there or pass --input_file=PATH")


def read_pieces(path: str, piece_bytes: int = 1 << 22) -> Iterator[str]:
    """A text file's text, about 4 MB at a time, so a text larger than memory can be tokenized.

    Each piece ends just before a line break that follows a non-space character. GPT-2's tokenizer
    never joins characters across such a place, so the pieces encode to the same tokens as the whole.
    """
    file = open_text(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    rest, bytes_before, lines_before = "", 0, 0
    with file:
        while True:
            raw = file.read(piece_bytes)
            cut_char = decoder.getstate()[0]  # the first bytes of a character the last read cut in two
            try:
                text = rest + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:  # e.start counts from cut_char's first byte
                byte = bytes_before - len(cut_char) + e.start
                line = lines_before + (cut_char + raw)[: e.start].count(b"\n") + 1
                fail(f"{path!r} is not UTF-8 text (byte {byte}, line {line}): save it as UTF-8 and try again")
            bytes_before, lines_before = bytes_before + len(raw), lines_before + raw.count(b"\n")
            if not raw:
                yield text
                return
            cut = text.rfind("\n")
            while cut > 0 and text[cut - 1].isspace():
                cut = text.rfind("\n", 0, cut)
            if cut > 0:  # else keep reading: the piece grows until it has a safe place to end
                yield text[:cut]
                rest = text[cut:]
            else:
                rest = text


def read_text(path: str) -> str:
    text = "".join(read_pieces(path))
    if not text.strip():
        fail(f"{path!r} is empty: put some text in it")
    return text


def load_tokens(path: str, kind: str) -> tuple[np.ndarray, CharTokenizer | GPT2Tokenizer]:
    """Every token of the text, as an array of uint16 mapped from a file beside it.

    Tokenizing a big text takes a while, so it is done once: input.txt's tokens go to
    input.txt.char.tokens (or .gpt2.tokens), and later runs reuse that file for as long as the text
    keeps its size and modification time. The array is memory-mapped: the operating system reads
    only the pages the batches touch, so a text larger than RAM trains, and a second start is instant.
    """
    make_tokenizer(kind)  # an unknown kind fails here, before any work
    with open_text(path) as f:
        stat = os.fstat(f.fileno())
    cache = f"{path}.{kind}.tokens"
    text_id = {"text_bytes": stat.st_size, "text_mtime_ns": stat.st_mtime_ns}
    try:
        with open(cache + ".json") as f:
            info = json.load(f)
        fresh = {key: info[key] for key in text_id} == text_id and os.path.getsize(cache) == 2 * info["tokens"]
    except (OSError, ValueError, KeyError):  # no cache yet, or a damaged one
        fresh = False
    if not fresh:
        info = write_token_cache(path, kind, cache, text_id)
    tokenizer = make_tokenizer(kind, chars=info.get("chars", ""))
    return np.memmap(cache, dtype=np.uint16, mode="r"), tokenizer


def write_token_cache(path: str, kind: str, cache: str, text_id: dict) -> dict:
    # a first pass checks the text and finds the characters it uses (the char tokenizer's vocabulary)
    chars = set().union(*map(set, read_pieces(path)))
    if not "".join(chars).strip():
        fail(f"{path!r} is empty: put some text in it")
    if kind == "char" and len(chars) > 2**16:
        fail(f"{path!r} uses {len(chars):,} different characters, more than 65,536: use --tokenizer=gpt2")
    tokenizer = make_tokenizer(kind, chars="".join(sorted(chars)))
    print(f"tokenizing {path} once; its tokens are saved to {cache} for the next run")
    n_tokens, pieces = 0, read_pieces(path)
    tmp = f"{cache}.{os.getpid()}.tmp"  # the process id: two runs starting together never share a file
    try:
        with open(tmp, "wb") as f:
            while batch := list(itertools.islice(pieces, os.cpu_count() or 1)):  # a piece per CPU core
                for ids in tokenizer.encode_batch(batch):
                    f.write(np.array(ids, dtype=np.uint16).tobytes())
                    n_tokens += len(ids)
        info = {**text_id, "tokens": n_tokens, **tokenizer.to_dict()}
        with open(tmp + ".json", "w") as f:
            json.dump(info, f)
        os.replace(tmp, cache)  # the tokens first, then the description that vouches for them
        os.replace(tmp + ".json", cache + ".json")
    except OSError as e:
        fail(f"cannot save the tokens to {cache!r} ({e.strerror}): put the text in a folder you can write to")
    finally:
        for leftover in (tmp, tmp + ".json"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return info


# -----------------------------------------------------------------------------
# Resuming, the log and the loss plot.


def resume_path(out_file: str) -> str:
    """The latest training state lives beside the best model: trained_model.pth -> trained_model.resume.pth."""
    return os.path.splitext(out_file)[0] + ".resume.pth"


def resume_command(out_file: str, world_size: int) -> str:
    """What to type to continue a run stopped with Ctrl-C."""
    flags = "--resume" if out_file == Hyperparameters.out_file else f"--resume --out_file={shlex.quote(out_file)}"
    script = sys.argv[0]  # gpt.py, as the user typed it (it may be in another folder)
    if world_size == 1:
        return f"python {script} {flags}"
    if world_size == int(os.environ.get("LOCAL_WORLD_SIZE", world_size)):  # torchrun sets it: processes here
        return f"torchrun --nproc_per_node={world_size} {script} {flags}"
    # processes on other machines too. Only rank 0 saved the file, and every process reads it on --resume
    return f"the same torchrun command on every machine, with {flags}, once every machine has {resume_path(out_file)}"


def open_log(path: str, resume_step: int | None) -> tuple:
    """train_log.csv: one row per evaluation. A resumed run keeps the rows from before resume_step."""
    rows = []
    if resume_step is not None and os.path.exists(path):
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["step"]) < resume_step]
    try:
        file = open(path, "w", newline="")
    except OSError as e:
        fail(f"cannot write {path!r} ({e.strerror}): pick another --out_file; the log goes beside it")
    log = csv.DictWriter(file, ["step", "tokens", "epoch", "elapsed_s", "train_loss", "val_loss", "lr"])
    log.writeheader()
    log.writerows(rows)
    return file, log


def restore(
    state: dict, model: GPT, averaged: GPT, optimizer: torch.optim.Optimizer,
    sampler: BatchSampler, hp: Hyperparameters, device: str,
) -> tuple[int, float, float]:  # fmt: skip
    """Put a saved run back exactly where it stopped, random number generators included.
    Returns its step, best val loss and training seconds so far."""
    if averaged is not model:  # (with ema_decay=0 there is no separate average)
        averaged.load_state_dict(state["model"])
    model.load_state_dict(state.get("trained_model", state["model"]))  # (files saved before averaging: "model")
    # the command line may have changed betas or weight decay (the groups are make_optimizer's:
    # matrices, then vectors), and fused must suit this device, which decides where the optimizer's
    # step counts are loaded to; the loop sets lr at every step
    for group, decay in zip(state["optimizer"]["param_groups"], (hp.weight_decay, 0.0)):
        group.update(betas=(hp.beta1, hp.beta2), weight_decay=decay, fused=fused_adamw(device))
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and device.startswith("cuda"):  # this GPU's generator (every process's is the same)
        torch.cuda.set_rng_state(state["cuda_rng"][0], device)
    sampler.load_state_dict(state["sampler"])
    print(f"resuming at step {state['step']} (best val loss so far {state['best_val_loss']:.4f})")
    return state["step"], state["best_val_loss"], state["elapsed_s"]


def plot_losses(log_path: str) -> None:
    """Train and val loss against tokens seen, as loss.png beside the log (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # draw to a file; no window needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("(pip install matplotlib to get a loss plot, loss.png)")
        return
    with open(log_path) as f:
        rows = list(csv.DictReader(f))
    tokens = [int(r["tokens"]) for r in rows]
    tokens_per_epoch = tokens[-1] / float(rows[-1]["epoch"]) if float(rows[-1]["epoch"]) > 0 else 1.0
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tokens, [float(r["train_loss"]) for r in rows], label="train")
    ax.plot(tokens, [float(r["val_loss"]) for r in rows], label="val")
    ax.set_xlabel("tokens seen")
    epochs = ax.secondary_xaxis("top", functions=(lambda t: t / tokens_per_epoch, lambda e: e * tokens_per_epoch))
    epochs.set_xlabel("epochs (passes over the training tokens)")
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    ax.grid(alpha=0.3)
    png = os.path.join(os.path.dirname(log_path), "loss.png")
    fig.savefig(png, dpi=100, bbox_inches="tight")
    print(f"loss plot: {png}")


# -----------------------------------------------------------------------------
# GPT-2 in and out: OpenAI's weights, through Hugging Face transformers (optional).


# transformers stores these as Conv1D layers, whose weights are (in, out): the transpose of nn.Linear's
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")  # transformers' names for GPT-2's tanh GELU ('gelu' is the exact one)


def hf_name(name: str) -> str:
    """Our parameter name -> Hugging Face's: 'blocks.0.ln_1.bias' -> 'transformer.h.0.ln_1.bias'."""
    return name if name == "lm_head.weight" else "transformer." + name.replace("blocks.", "h.")


def import_transformers() -> ModuleType:
    try:
        import transformers

        transformers.logging.set_verbosity_error()  # keep its warnings and progress bars out of our messages
        transformers.logging.disable_progress_bar()
        return transformers
    except ImportError:
        fail("this needs Hugging Face transformers: pip install transformers")


def from_pretrained(name_or_dir: str, block_size: int = 0, dropout: float = 0.0, attention: str = "sdpa") -> GPT:
    """GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', or a saved directory) as our GPT.

    block_size, if given and smaller than GPT-2's 1024, keeps only the first block_size position
    embeddings: fine-tuning on a shorter context is much cheaper, and the rest are never used.
    """
    if name_or_dir.startswith((".", os.sep)) and not os.path.isdir(name_or_dir):  # a path, not a model name
        fail(f"--init_from={name_or_dir}: there is no such folder")
    transformers = import_transformers()
    try:
        hf, loading = transformers.GPT2LMHeadModel.from_pretrained(name_or_dir, output_loading_info=True)
    except Exception as e:  # no such directory, no network, not a GPT-2 checkpoint, ...
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:150]
        fail(
            f"cannot load GPT-2 weights from {name_or_dir!r} ({reason}). Give a directory holding a Hugging Face "
            "GPT-2 checkpoint (config.json + model.safetensors), or a model name with internet access once"
        )
    c = hf.config
    if c.model_type != "gpt2":
        fail(f"{name_or_dir!r} holds a {c.model_type!r} model, not GPT-2")
    if c.vocab_size < 50257:  # fine-tuning reads the text with GPT-2's tokenizer
        fail(
            f"{name_or_dir!r} has a {c.vocab_size}-token vocabulary, not GPT-2's 50,257 (a character model "
            "exported with --export_hf?): --init_from needs GPT-2's tokenizer; to train a gpt.py model on, use --resume"
        )
    can_express = {  # the GPT-2 options gpt.py's model implements
        "activation_function": c.activation_function in (*TANH_GELU, "gelu"),  # GELU, tanh-approximated or exact
        "n_inner": c.n_inner in (None, 4 * c.n_embd),  # MLP 4x wide
        "layer_norm_epsilon": c.layer_norm_epsilon == 1e-5,
        "scale_attn_weights": c.scale_attn_weights,  # divide scores by sqrt(head_size)
        "scale_attn_by_inverse_layer_idx": not c.scale_attn_by_inverse_layer_idx,
        "tie_word_embeddings": c.tie_word_embeddings,
    }
    if not all(can_express.values()):
        options = ", ".join(f"{k}={getattr(c, k)!r}" for k, ok in can_express.items() if not ok)
        fail(f"{name_or_dir!r} is a GPT-2 variant gpt.py cannot express ({options})")
    if loading["missing_keys"]:
        fail(f"{name_or_dir!r} lacks weights GPT-2 needs: {', '.join(loading['missing_keys'][:3])}")
    gelu = "tanh" if c.activation_function in TANH_GELU else "exact"
    config = GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer, n_head=c.n_head,
                       n_embd=c.n_embd, dropout=dropout, bias=True, gelu=gelu, attention=attention)  # fmt: skip
    model = GPT(config)
    hf_weights = hf.state_dict()
    with torch.no_grad():
        for name, p in model.named_parameters():
            w = hf_weights[hf_name(name)]
            p.copy_(w.t() if name.endswith(CONV1D_WEIGHTS) else w)
        if 0 < block_size < config.block_size:
            model.wpe.weight = nn.Parameter(model.wpe.weight[:block_size].clone())
            model.config.block_size = block_size
    return model


def start_from_gpt2(
    hp: Hyperparameters, device: str, dtype: torch.dtype, overrides: dict
) -> tuple[GPT, Hyperparameters]:
    """GPT-2's weights (--init_from), and the settings with GPT-2's shape and tokenizer in place of ours."""
    attention = pick_attention(hp.attention, device, dtype, hp.block_size)
    pretrained = from_pretrained(hp.init_from, hp.block_size, hp.dropout, attention)
    c = pretrained.config
    # the shape is GPT-2's, except that --block_size may crop its context (see from_pretrained)
    gpt2 = {**dataclasses.asdict(c), "tokenizer": "gpt2"}
    refuse_another_shape(gpt2, overrides, f"start from {hp.init_from}", "drop that flag: the shape is GPT-2's")
    print(f"starting from {hp.init_from}, context {c.block_size}")  # train() prints the rest of its shape
    hp = dataclasses.replace(hp, **{name: gpt2[name] for name in MODEL_SHAPE})
    return pretrained, hp


def export_hf(checkpoint: dict, directory: str) -> None:
    """Write a checkpoint as a directory that transformers' GPT2LMHeadModel.from_pretrained loads."""
    config = GPTConfig(**checkpoint["config"])
    transformers = import_transformers()
    hf_config = transformers.GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        activation_function=TANH_GELU[0] if config.gelu == "tanh" else "gelu",
        bos_token_id=50256 if config.vocab_size == 50257 else None,  # <|endoftext|>, in GPT-2's vocabulary
        eos_token_id=50256 if config.vocab_size == 50257 else None,
    )  # fmt: skip
    hf = transformers.GPT2LMHeadModel(hf_config)
    ours = {hf_name(name): (w.t() if name.endswith(CONV1D_WEIGHTS) else w) for name, w in checkpoint["model"].items()}
    if not config.bias:  # GPT-2 has biases everywhere: a model trained without them is GPT-2 with all biases 0
        ours |= {name: torch.zeros_like(p) for name, p in hf.named_parameters() if name.endswith(".bias")}
    missing, unexpected = hf.load_state_dict(ours, strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:  # transformers ties lm_head to wte itself
        fail(f"cannot export: weights that do not map onto GPT-2 ({', '.join([*missing, *unexpected][:3])})")
    hf.save_pretrained(directory)
    print(f"exported to {directory}: load it with transformers.GPT2LMHeadModel.from_pretrained({directory!r})")
    if checkpoint["tokenizer"]["kind"] == "char":
        print(
            "(a character-level model: token i is the i-th character of the checkpoint's vocabulary, not a GPT-2 token)"
        )


# -----------------------------------------------------------------------------
# The command line and the hardware.


def parse_overrides(argv: list[str], settings: type = Hyperparameters) -> dict:
    """Turn ['--n_layer=4', '--sample'] into {'n_layer': 4, 'sample': True}, checking every name and type."""
    types = {f.name: f.type for f in dataclasses.fields(settings)}
    if "-h" in argv or "--help" in argv:  # every setting, its default and what it does, as the file has them
        print(f"usage: python {sys.argv[0]} [--setting=value ...], with any of these settings:\n")
        print(inspect.getsource(settings))
        raise SystemExit(0)
    overrides = {}
    for arg in argv:
        name, has_value, value = arg.removeprefix("--").partition("=")
        if not arg.startswith("--"):
            fail(f"{arg!r} is not a setting: write settings as --name=value, with no spaces around the =")
        if name not in types:
            close = difflib.get_close_matches(name, types, n=1)
            hint = f"did you mean --{close[0]}?" if close else f"see {settings.__name__} at the top of the file"
            fail(f"unknown setting {arg!r}: {hint}")
        kind = types[name]
        if kind is bool:
            value = value.lower() if has_value else "true"  # a bare --sample means --sample=true
            if value not in ("true", "false", "1", "0"):
                fail(f"--{name} takes true or false, not {value!r}")
            overrides[name] = value in ("true", "1")
            continue
        if not (value or name == "prompt"):  # an empty --export_hf= (say, from an unset $DIR) must not train
            fail(f"--{name} needs a value: --{name}=...")
        if name in ("input_file", "out_file", "prompt_file", "init_from", "export_hf"):
            value = os.path.expanduser(value)  # the shell leaves the ~ of --out_file=~/m.pth as it is
        try:
            overrides[name] = kind(value)
        except ValueError:
            fail(f"--{name} takes {dict(int='a whole number', float='a number')[kind.__name__]}, not {value!r}")
    return overrides


def check_at_least(settings: object, minimum: dict) -> None:
    """Each setting named in minimum is at least its value there (bigram.py uses this too)."""
    for name, low in minimum.items():
        if getattr(settings, name) < low:
            fail(f"--{name} must be at least {low}, not {getattr(settings, name)}")


def check_settings(hp: Hyperparameters) -> None:
    """Values no run can use, refused before anything is read or written."""
    # block_size: at least 2, so the 3/4 of a full window that generating keeps (GPT.stream) holds a token
    check_at_least(hp, dict(n_layer=1, n_head=1, n_embd=1, block_size=2, batch_size=1, grad_accum_steps=1,
                            eval_interval=1, eval_iters=1, num_samples=1, max_iters=0, warmup_iters=0,
                            sample_interval=0, sample_tokens=0, max_new_tokens=0, top_k=0, temperature=0.0,
                            grad_clip=0.0, weight_decay=0.0, min_lr=0.0))  # fmt: skip
    for name in ("dropout", "beta1", "beta2", "ema_decay"):
        if not 0 <= getattr(hp, name) < 1:
            fail(f"--{name} must be from 0 up to (not including) 1, not {getattr(hp, name)}")
    if hp.prompt_file and not os.path.isfile(hp.prompt_file):
        fail(f"--prompt_file={hp.prompt_file}: there is no such file")
    out_folder = os.path.dirname(hp.out_file) or "."
    if not os.path.isdir(out_folder):
        fail(f"--out_file={hp.out_file}: there is no folder {out_folder!r}; create it first")
    if not os.path.basename(hp.out_file) or (os.path.exists(hp.out_file) and not os.path.isfile(hp.out_file)):
        fail(f"--out_file={hp.out_file!r} must name a file, such as trained_model.pth, not a folder or a device")
    modes = [f"--{mode}" for mode in ("sample", "export_hf", "resume") if getattr(hp, mode)]
    if len(modes) > 1:
        fail(f"{' and '.join(modes)} do different things: run them one at a time")
    training = not (hp.sample or hp.export_hf)
    if training and not os.access(out_folder, os.W_OK):
        fail(f"--out_file={hp.out_file}: cannot write in {out_folder!r}; pick a folder you can write to")
    # what a run writes: out_file, its resume file, and train_log.csv and loss.png beside them
    written = [
        hp.out_file,
        resume_path(hp.out_file),
        *(os.path.join(out_folder, f) for f in ("train_log.csv", "loss.png")),
    ]
    if training and os.path.realpath(hp.input_file) in map(os.path.realpath, written):
        fail(f"--out_file={hp.out_file} would overwrite the text it trains on, {hp.input_file}: pick another name")
    if hp.export_hf and os.path.exists(hp.export_hf) and not os.path.isdir(hp.export_hf):
        fail(f"--export_hf={hp.export_hf} is a file; name a folder to write the model into")
    if not 0 < hp.top_p <= 1:
        fail(f"--top_p must be above 0 and at most 1, not {hp.top_p}")
    if not hp.learning_rate > 0:
        fail(f"--learning_rate must be above 0, not {hp.learning_rate}")
    if hp.min_lr > hp.learning_rate:
        fail(
            f"--min_lr={hp.min_lr} is above --learning_rate={hp.learning_rate}: add --min_lr={hp.learning_rate / 10:g}"
        )
    for name, value in dataclasses.asdict(hp).items():
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"--{name} must be a finite number, not {value}")
    if not 0 <= hp.seed < 2**63 - 1:  # (evaluation seeds its own generator with seed + 1)
        fail(f"--seed must be from 0 to 2**63 - 2, not {hp.seed}")
    if hp.n_embd % hp.n_head != 0:
        heads = ", ".join(str(h) for h in range(1, 17) if hp.n_embd % h == 0)  # the head counts that fit
        fail(f"n_embd ({hp.n_embd}) must be divisible by n_head ({hp.n_head}): use one of --n_head={heads}")
    choices = dict(attention=("auto", "by_hand", "sdpa"), batching=("random", "sliding"), gelu=("exact", "tanh"))
    for name, allowed in choices.items():
        if getattr(hp, name) not in allowed:
            fail(f"--{name} must be one of {', '.join(allowed)}, not {getattr(hp, name)!r}")
    if not 0 <= hp.stride <= hp.block_size:  # a longer stride would skip text between windows
        fail(f"--stride must be from 1 to block_size ({hp.block_size}), or 0 for block_size; not {hp.stride}")
    if hp.stride and hp.batching != "sliding":
        fail(f"--stride={hp.stride} places sliding windows: add --batching=sliding, or drop --stride")


def pick_device(requested: str) -> str:
    if requested != "auto":
        available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
        kind, _, index = requested.partition(":")  # 'cuda:1' -> 'cuda', '1'
        if not available.get(kind):
            fail(f"--device={requested} is not available here: use --device=auto or --device=cpu")
        if kind == "cuda" and index and not (index.isdigit() and int(index) < torch.cuda.device_count()):
            fail(f"--device={requested}: this machine's GPUs are cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return "cpu" if kind == "cpu" else requested  # 'cpu:0' is the one CPU, which the code calls 'cpu'
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def good_dtypes(device: str) -> dict[str, str]:
    """The precisions this device does well, best first: the best with the reason, the rest with ''
    (listed so that --dtype can ask for them). Devices of one kind list them in the same order."""
    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported(including_emulation=False):  # emulated bf16 is slow: those GPUs get fp16
            return {"bfloat16": "this GPU supports bf16", "float16": "", "float32": ""}
        return {"float16": "this GPU has no bf16, so fp16 with a gradient scaler", "float32": ""}
    if device == "cpu":
        # CPUs with AVX-512 BF16 or AMX multiply bf16 matrices natively, 4-7x faster than fp32;
        # elsewhere bf16 is emulated and slower, so fp32 stays. fp16 is for GPUs. (Asking the CPU, not
        # timing it, keeps the choice, and so the run, the same however busy the machine is.)
        native = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own checks
        if any(getattr(torch.cpu, check, lambda: False)() for check in native):
            return {"bfloat16": "this CPU multiplies bf16 natively (AVX-512 BF16 or AMX)", "float32": ""}
        return {"float32": "this CPU has no native bf16 matmul"}
    return {"float32": f"the safe choice on {device}", "bfloat16": "", "float16": ""}


def pick_dtype(device: str, requested: str, world_size: int = 1) -> tuple[torch.dtype, str]:
    """The precision matmuls run in under autocast, and the reason it was chosen.

    Under torchrun every process calls this at the same point, to swap lists with the others (NCCL
    does it on the current GPU, which main() sets first)."""
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    good = own = good_dtypes(device)
    own_best = next(iter(own))
    if world_size > 1:  # keep only what every process does well: machines may differ (one GPU lacks bf16)
        everyone = [None] * world_size
        torch.distributed.all_gather_object(everyone, list(good))
        good = {name: why for name, why in good.items() if all(name in theirs for theirs in everyone)}
    if requested == "auto":
        best = next(iter(good))
        return names[best], good[best] or f"the best every process does well (this one alone would use {own_best})"
    if requested not in names:
        fail(f"--dtype must be auto, float32, bfloat16 or float16, not {requested!r}")
    if requested not in good:
        kind = device.split(":")[0]
        which = f"this {kind} cannot" if requested not in own else f"not every process's {kind} can"
        fail(f"{which} do {requested} well: use --dtype={', '.join(good)} or auto")
    return names[requested], "asked for with --dtype"


def pick_attention(requested: str, device: str, dtype: torch.dtype, block_size: int) -> str:
    """'auto': the explicit math on a CPU running bf16 with a context of at most 256; else PyTorch's fused kernel.

    On the README's 2-core CPU, by hand against fused: under bf16 the explicit version was faster for
    short contexts (a baby GPT step at context 256: 375 against 427 ms); in fp32 it was slower (1,007
    against 943 ms). The fused kernel never stores the (T, T) attention weights, so for long contexts
    it needs far less memory and is as fast or faster (GPT-2 124M at 4 x 1024: 6.4 against 5.1 GB,
    10.6 against 6.1 s a step). On GPUs it is flash attention.
    """
    if requested != "auto":
        return requested
    return "by_hand" if device == "cpu" and dtype == torch.bfloat16 and block_size <= 256 else "sdpa"


def keep_freed_memory() -> None:
    """Ask the C library to keep the memory PyTorch frees for reuse, instead of handing it back.

    Every training step frees and allocates the same activation-sized blocks (megabytes each) again.
    By default Linux's C library returns such blocks to the operating system, which gives them back
    as fresh pages, each zeroed on its first touch: 8-13% of a step on the README's 2-core CPU.
    Linux (glibc) only; elsewhere the allocator decides for itself and this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GB of freed memory
        libc.mallopt(-3, 1 << 25)  # M_MMAP_THRESHOLD: blocks up to 32 MB (the most it allows) come from that memory
    except (OSError, AttributeError):  # no glibc, or no mallopt in it
        pass


def compile_problem(device: str) -> str:
    """Why torch.compile cannot work here, or '' when it can."""
    if not torch._dynamo.is_dynamo_supported():
        return f"torch.compile does not support Python {sys.version_info.major}.{sys.version_info.minor} yet"
    if device == "cpu" and not any(shutil.which(cxx) for cxx in (os.environ.get("CXX", ""), "g++", "clang++", "cl")):
        return "torch.compile turns the model into C++ on a CPU and needs a compiler (install g++ or clang)"
    if device.startswith("cuda") and not torch.utils._triton.has_triton():
        return "torch.compile needs triton on a GPU (pip install triton)"
    if device == "mps":
        return "torch.compile does not support Apple GPUs (mps) well yet"
    return ""


MODEL_SHAPE = ("tokenizer", "n_layer", "n_head", "n_embd", "block_size", "bias", "gelu")  # fixed once trained


def refuse_another_shape(saved: dict, overrides: dict, doing: str, advice: str) -> None:
    """A trained model's shape is fixed: a flag asking for another one would be ignored, or break it."""
    for name in MODEL_SHAPE:
        if name in overrides and overrides[name] != saved[name]:
            fail(f"cannot {doing} with --{name}={overrides[name]}: the saved model has {name}={saved[name]}; {advice}")


def resumed_settings(saved: dict, overrides: dict) -> dict:
    """A resumed run keeps its saved settings; the command line may change anything but the model's shape."""
    # runs saved before these settings existed used GPT-2's tanh GELU, SDPA, and no average of the weights
    saved = {"gelu": "tanh", "attention": "sdpa", "ema_decay": 0.0, **saved}
    refuse_another_shape(saved, overrides, "resume", "drop that flag, or start a new run without --resume")
    known = {f.name for f in dataclasses.fields(Hyperparameters)}
    return {**{k: v for k, v in saved.items() if k in known}, **overrides}


def setup_distributed(device: str) -> tuple[int, int, str]:
    """Under torchrun (which sets RANK, LOCAL_RANK, WORLD_SIZE): join the other processes, give each
    its own GPU, cuda:LOCAL_RANK (main() makes it current), and send the stdout of every process but
    rank 0 to nowhere, so a plain print() speaks once; errors still reach stderr from every process.
    Without torchrun: one ordinary process."""
    if "RANK" not in os.environ:
        return 0, 1, device
    rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device == "mps":
        fail("torchrun cannot connect processes on Apple GPUs (mps): add --device=cpu, or run `python gpt.py`")
    backend = "nccl" if device.startswith("cuda") else "gloo"  # NCCL between GPUs, gloo between CPUs
    dist = torch.distributed
    if not (dist.is_available() and getattr(dist, f"is_{backend}_available")()):
        fail(f"this PyTorch cannot connect processes with {backend}: run `python gpt.py` without torchrun, "
             f"or install a PyTorch build with {backend}")  # fmt: skip
    try:
        dist.init_process_group(backend)
    except Exception as e:
        fail(f"torchrun could not connect {world_size} processes with the {backend} backend ({type(e).__name__}: {e})")
    atexit.register(dist.destroy_process_group)  # leave the group however the run ends: done, Ctrl-C or an error
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # one process speaks for all of them
    return rank, world_size, device


# -----------------------------------------------------------------------------
# main(): what runs when you type `python gpt.py`.


def main(argv: list[str]) -> None:
    overrides = parse_overrides(argv)
    rank, world_size, device = setup_distributed(pick_device(overrides.get("device", "auto")))
    if device.startswith("cuda:"):  # make it the current GPU: the one the dtype probe asks, and CUDA's default
        torch.cuda.set_device(device)
    settings = {**(CUDA_DEFAULTS if device.startswith("cuda") else {}), **overrides}
    state = None
    if overrides.get("resume"):
        path = resume_path(Hyperparameters(**settings).out_file)
        if not os.path.exists(path):
            fail(f"nothing to resume: no {path!r} here (a run saves it at every evaluation and on Ctrl-C)")
        state = load_checkpoint(path, "cpu")  # random generator states must be CPU tensors; weights move later
        if "optimizer" not in state:
            fail(f"{path!r} holds a model but no training state to resume: use it with --sample, or train anew")
        if "sampler" not in state:  # gpt.py before 2026-11-22 kept only its batches' random generator
            fail(f"{path!r} was saved by an older gpt.py, which kept too little to resume exactly: train anew")
        settings = resumed_settings(state["hyperparameters"], overrides)
    hp = Hyperparameters(**{**settings, "device": device})
    check_settings(hp)
    if hp.grad_accum_steps % world_size:  # every process needs the same whole number of micro-batches
        rounded = -(-hp.grad_accum_steps // world_size) * world_size
        print(f"{world_size} processes: grad_accum_steps raised from {hp.grad_accum_steps} to {rounded}")
        hp = dataclasses.replace(hp, grad_accum_steps=rounded)
    if state and state["step"] > hp.max_iters:
        fail(f"the saved run is at step {state['step']}, past --max_iters={hp.max_iters}: raise --max_iters to go on")
    if "prompt" in overrides and "prompt_file" in overrides:
        fail("--prompt and --prompt_file both give the prompt: keep one of them")
    if hp.prompt_file and "prompt" not in overrides:  # from here on, the prompt is just text
        hp = dataclasses.replace(hp, prompt=read_text(hp.prompt_file))
    dtype, why = pick_dtype(device, hp.dtype, world_size)
    print(f"{device}, {str(dtype).removeprefix('torch.')}: {why}")
    problem = compile_problem(device) if hp.compile and not (hp.sample or hp.export_hf) else ""
    if problem and "compile" in overrides:
        fail(f"--compile=True cannot work here: {problem}; use --compile=False")
    if problem:
        print(f"not compiling: {problem}")
        hp = dataclasses.replace(hp, compile=False)
    # autocast runs matmuls in the low-precision dtype and keeps the weights (and so the optimizer's
    # state) in fp32: speed from bf16, accuracy of the updates from fp32
    autocast = torch.autocast(device.split(":")[0], dtype=dtype) if dtype != torch.float32 else nullcontext()
    if device == "cpu":
        keep_freed_memory()
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (TF32): ~8x faster
        torch.backends.cudnn.allow_tf32 = True
    if hp.export_hf:
        return export_hf(load_checkpoint(hp.out_file, "cpu"), hp.export_hf)
    if hp.sample:
        model, tokenizer = load_for_sampling(hp, device, dtype)
        saved = {**dataclasses.asdict(model.config), "tokenizer": tokenizer.to_dict()["kind"]}
        refuse_another_shape(saved, overrides, "sample", "drop that flag: --sample reads the shape from the model")
    else:
        pretrained = None
        if hp.init_from and not state:  # fine-tune GPT-2: its weights, and its shape and tokenizer in hp
            pretrained, hp = start_from_gpt2(hp, device, dtype, overrides)
        model, tokenizer = train(hp, device, dtype, autocast, state, pretrained, rank, world_size)
        if world_size > 1:  # leave together: a process exiting just after a collective can crash in gloo's cleanup
            torch.distributed.barrier()
    if rank == 0:
        print_samples(model, tokenizer, hp, autocast)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C outside training (loading, sampling): stop quietly
    except (MemoryError, torch.cuda.OutOfMemoryError):  # in the computer's RAM, or in a GPU's own memory
        sys.exit("error: out of memory: use a smaller --batch_size, --block_size or model (or fewer --num_samples)")
    except BrokenPipeError:  # whatever read the output has stopped, as `python gpt.py --sample | head` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit fails no more
        sys.exit(1)
