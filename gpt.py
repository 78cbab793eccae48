"""gpt.py: train a GPT on a text file, from scratch, in one file you can read top to bottom.

    python gpt.py                    # train on input.txt, save trained_model.pth, print samples
    python gpt.py --sample           # load trained_model.pth and print samples
    python gpt.py --n_layer=6 --max_iters=500   # change any setting for one run

Part 1, the tutorial, is the whole idea in lecture order, from the knobs to main(). Part 2, the
workshop below the fence, makes it a tool (command line, hardware, the run's files, big texts,
GPT-2, torchrun); Part 1 calls it by names that say what they do, and a first read can skip them.
"""

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

try:  # Ctrl-C while these load (a second or two) stops quietly, as it does everywhere else
    import numpy as np
    import tiktoken
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except KeyboardInterrupt:
    raise SystemExit(130) from None

# -----------------------------------------------------------------------------
# The knobs to edit. Each can also be set for one run as --name=value (--n_layer=6). The ranges
# are the sensible ones; Part 2 refuses only what cannot work (too small, or too big for memory).


@dataclass
class Hyperparameters:
    # data
    input_file: str = "input.txt"  # the text to train on (UTF-8); any text works
    tokenizer: str = "char"  # 'char': a token per character; 'gpt2': GPT-2's 50,257 BPE tokens
    # model: sized for a laptop CPU (on a CUDA GPU, Part 2's CUDA_DEFAULTS: the lecture's 6 x 384)
    n_layer: int = 4  # transformer blocks stacked on top of each other (2-12)
    n_head: int = 6  # attention heads per block; must divide n_embd (2-12)
    n_embd: int = 192  # width of every token's vector (64-768)
    block_size: int = 128  # context: how many tokens the model sees at once (32-1024)
    dropout: float = 0.0  # fraction of activations zeroed in training (0-0.2; 0 for short runs)
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2 has them
    gelu: str = "exact"  # the MLP's GELU: 'exact', or GPT-2's 'tanh' approximation (see MLP)
    # training
    batch_size: int = 32  # sequences per micro-batch: one forward and backward pass (8-64)
    grad_accum_steps: int = 1  # micro-batches per optimizer step (the total, under torchrun)
    max_iters: int = 2250  # optimizer steps in the whole run; the last evaluates and saves
    learning_rate: float = 2e-3  # peak learning rate (1e-4 to 3e-3; smaller for bigger models)
    min_lr: float = 2e-4  # learning rate at the end of the cosine decay (about learning_rate / 10)
    warmup_iters: int = 100  # steps over which the learning rate climbs up to learning_rate
    weight_decay: float = 1.0  # AdamW's pull of weight matrices towards 0 (0.1-1.0; see below)
    beta1: float = 0.9  # AdamW momentum
    beta2: float = 0.99  # AdamW second-moment decay (0.95-0.999)
    optimizer: str = "adamw"  # 'adamw', or 'muon' for the blocks' matrices (Part 2, MuonAndAdamW)
    grad_clip: float = 1.0  # clip the gradient norm to this (0 = off)
    ema_decay: float = 0.99  # keep a moving average of the weights (0.9-0.999; 0 = off)
    eval_interval: int = 250  # evaluate train and val loss every this many steps
    eval_iters: int = 20  # batches averaged per loss estimate (more = less noisy, slower)
    target_loss: float = 0.0  # stop once the val loss is at or below this (0 = run all steps)
    sample_interval: int = 250  # print a short sample every this many steps (0 = never)
    sample_tokens: int = 100  # length of those samples
    seed: int = 1337  # same seed, same run
    # sampling
    prompt: str = ""  # text the samples start from ('' = a newline, or GPT-2's <|endoftext|>)
    num_samples: int = 2  # samples to print (one batch; a single one prints as it is written)
    max_new_tokens: int = 500  # tokens generated per sample
    temperature: float = 0.8  # <1 is safer and duller, >1 wilder; 0 always takes the likeliest
    top_k: int = 0  # sample only among the k likeliest tokens (0 = all of them)
    top_p: float = 1.0  # sample among the likeliest tokens whose probabilities reach this (1 = all)
    kv_cache: bool = True  # reuse each token's keys and values when sampling (False: slower)


# -----------------------------------------------------------------------------
# Tokenizers: text -> integers the model can read, and back.


class CharTokenizer:
    """One token per distinct character of the training text: tiny vocabulary, long sequences."""

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.vocab_size = len(chars)
        self.stoi = {ch: i for i, ch in enumerate(chars)}
        self.start_token = self.stoi.get("\n", 0)  # samples start on a fresh line
        self.stop_token = None  # samples run to their full length

    def encode(self, text: str) -> list[int]:
        return [self.stoi[ch] for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


class GPT2Tokenizer:
    """GPT-2's byte-pair encoding (tiktoken): 50,257 tokens, about 4 characters each in English."""

    def __init__(self) -> None:
        self.enc = tiktoken.get_encoding("gpt2")
        self.vocab_size = self.enc.n_vocab
        self.start_token = self.stop_token = self.enc.eot_token  # <|endoftext|>: between documents

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)  # ordinary: '<|endoftext|>' in a text is just text

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(ids)  # bytes that are not valid UTF-8 become U+FFFD


Tokenizer = CharTokenizer | GPT2Tokenizer

# -----------------------------------------------------------------------------
# Batches: B windows of T tokens of the text, each with the window shifted by one as its targets.


def split_tokens(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First 90% of the tokens to train on, last 10% to validate on (contiguous: no leakage)."""
    n = int(0.9 * len(tokens))
    return tokens[:n], tokens[n:]


def random_starts(n_tokens: int, block_size: int, batch_size: int, generator: torch.Generator
                  ) -> torch.Tensor:  # fmt: skip
    """batch_size random positions at which a whole window of block_size + 1 tokens fits."""
    return torch.randint(n_tokens - block_size, (batch_size,), generator=generator)


def get_batch(data: np.ndarray, starts: torch.Tensor, block_size: int, device: str
              ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The windows of block_size + 1 tokens beginning at starts: x is each window but its last
    token, y each window but its first, so y[b, t] is the token that follows x[b, :t+1]."""
    rows = [data[i : i + block_size + 1].astype(np.int64) for i in starts]
    windows = torch.from_numpy(np.stack(rows))  # (B, T + 1)
    if device.startswith("cuda"):  # from page-locked memory the copy overlaps the GPU's work
        windows = windows.pin_memory().to(device, non_blocking=True)
    else:  # (elsewhere a non-blocking copy may read the memory after it is freed)
        windows = windows.to(device)
    return windows[:, :-1], windows[:, 1:]  # x and y, (B, T) each


# -----------------------------------------------------------------------------
# The model: GPT-2's architecture, layer by layer. B, T, C: batch, time (tokens), n_embd.


@dataclass
class GPTConfig:  # the model's shape; the optional fields default to GPT-2's choices
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    gelu: str = "tanh"  # GPT-2's 'tanh', or 'exact' as Hyperparameters trains (see MLP)
    attention: str = "sdpa"  # or 'by_hand': the same math; Part 2 picks the faster here


def attention_by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0
                      ) -> torch.Tensor:  # fmt: skip
    """Causal attention spelled out: what F.scaled_dot_product_attention (SDPA) fuses in one call.

    Every token emits a query (what it looks for), a key (what it offers) and a value (what it
    passes on), and mixes the values of itself and earlier tokens, weighted by how well its query
    matches their keys. q: (B, n_head, T, head_size), the newest T tokens; k, v: (B, n_head, T_all,
    head_size), all tokens so far (T_all > T only with a KV cache)."""
    T, T_all, head_size = q.size(-2), k.size(-2), q.size(-1)
    # dividing by sqrt(head_size) keeps the scores' spread near 1, so softmax does not saturate
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_size)  # (B, n_head, T, T_all)
    # the causal mask: a token may not look at later tokens; -inf there gives them weight 0
    future = torch.full((T, T_all), float("-inf"), dtype=scores.dtype, device=q.device)
    future = future.triu(diagonal=T_all - T + 1)  # -inf where the key comes after the query
    weights = F.softmax(scores + future, dim=-1)  # (B, n_head, T, T_all), each row sums to 1
    weights = F.dropout(weights, dropout)  # in training, ignore some tokens at random
    return weights @ v  # (B, n_head, T, head_size)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head  # several heads let a token look for several things at once
        self.dropout, self.attention = config.dropout, config.attention  # see forward
        self.block_size = config.block_size  # the most tokens a KV cache holds (see forward)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # heads -> C
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, C = x.size()
        head_size = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, head_size).transpose(1, 2)  # (B, n_head, T, head_size)
        k = k.view(B, T, self.n_head, head_size).transpose(1, 2)  # (B, n_head, T, head_size)
        v = v.view(B, T, self.n_head, head_size).transpose(1, 2)  # (B, n_head, T, head_size)
        if cache is not None:  # generating: {} starts a cache; then k, v of the n tokens so far
            if not cache:  # room for a whole context, made once: a new token only writes its own
                room = (B, self.n_head, self.block_size, head_size)
                cache.update(k=k.new_empty(room), v=v.new_empty(room), n=0)
            past, cache["n"] = cache["n"], cache["n"] + T
            cache["k"][:, :, past : past + T], cache["v"][:, :, past : past + T] = k, v
            k, v = cache["k"][:, :, : past + T], cache["v"][:, :, : past + T]  # (B, nh, all, hs)
        dropout = self.dropout if self.training else 0.0
        if self.attention == "by_hand":  # the same math either way (tests/test_model.py)
            y = attention_by_hand(q, k, v, dropout)
        else:  # one fused kernel that never stores the (T, T) weights: flash attention on GPUs
            assert T in (1, k.size(-2)), "is_causal masks a whole window, or nothing for one token"
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): the heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Per token: widen 4x, GELU, narrow back. Attention mixes tokens; this thinks about each."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GELU(x) = x * P(X <= x) for a standard normal X: a smooth ReLU. GPT-2's weights expect
        # the GELU paper's tanh approximation; from scratch the exact one does as well, faster.
        self.gelu = nn.GELU(approximate="tanh" if config.gelu == "tanh" else "none")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One transformer block, pre-LayerNorm: normalise, transform, add onto the residual stream."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        # the residual adds give gradients a straight path from the loss to every layer
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


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
        # weight tying: reading a token in and writing it out share one matrix (fewer
        # parameters, and a better model for its size: https://arxiv.org/abs/1608.05859)
        self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # each block adds onto the residual stream twice; scaling those projections by
        # 1/sqrt(2 * n_layer) keeps the stream's variance from growing with depth (GPT-2, 2.3)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix counts once

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: list | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab_size) scoring each possible next token after each position of idx
        (B, T); with targets (B, T), the loss. cache: a dict per block (see stream)."""
        logits = self.lm_head(self.hidden(idx, cache))  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        # cross-entropy: minus the log of the probability given to the true next token, averaged;
        # guessing uniformly scores ln(vocab_size). In fp32: in bf16 the softmax's sum would
        # lose precision. reshape, not view: targets is a strided slice of the batch
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.reshape(-1))
        return logits, loss

    def hidden(self, idx: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        """Every position's vector after the last block: (B, T, n_embd)."""
        past = cache[0]["n"] if cache and cache[0] else 0  # tokens already cached
        T = idx.size(1)
        assert past + T <= self.config.block_size, "more tokens than the model's context"
        pos = torch.arange(past, past + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, n_embd)
        for i, block in enumerate(self.blocks):
            x = block(x, cache[i] if cache is not None else None)
        return self.ln_f(x)

    @torch.no_grad()
    def stream(
        self, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True, **sampling
    ) -> Iterator[torch.Tensor]:
        """Yield max_new_tokens new tokens (B, 1), one at a time, each drawn given all before it.

        The KV cache keeps every layer's keys and values of the tokens seen, so a new token costs
        one token's compute. Positions are absolute (learned wpe): when the text outgrows
        block_size, the window drops its oldest quarter and is encoded afresh (sliding by one
        token would move every cached position). Without the cache, the same text, slower."""
        start, cache = max(0, idx.size(1) - self.config.block_size), None  # window: idx[:, start:]
        for _ in range(max_new_tokens):
            if idx.size(1) - start > self.config.block_size:  # window full: drop a quarter
                start, cache = idx.size(1) - self.config.block_size * 3 // 4, None
            if cache:
                logits, _ = self(idx[:, -1:], cache=cache)  # only the newest token is new
            else:
                cache = [{} for _ in self.blocks] if use_cache else None
                logits, _ = self(idx[:, start:], cache=cache)  # encode the whole window
            next_token = sample_next_token(logits[:, -1, :].float(), **sampling)  # (B, 1), below
            idx = torch.cat([idx, next_token], dim=1)
            yield next_token

    def generate(self, idx: torch.Tensor, max_new_tokens: int, **options) -> torch.Tensor:
        """idx (B, T) followed by max_new_tokens sampled tokens: (B, T + max_new_tokens)."""
        return torch.cat([idx, *self.stream(idx, max_new_tokens, **options)], dim=1)


# -----------------------------------------------------------------------------
# Optimizer, learning-rate schedule and the weight average.


def make_optimizer(model: GPT, hp: Hyperparameters, fused: bool) -> torch.optim.Optimizer:
    if hp.optimizer == "muon":  # Part 2: Muon steps the blocks' matrices, this AdamW the rest
        return MuonAndAdamW(model, hp, fused)
    # Weight decay pulls weights towards zero: it regularises the matrices and embeddings that do
    # the work; biases and LayerNorm gains are few and their scale matters. The CPU default, 1.0,
    # is ten times the usual 0.1: a short run reads a small text many times, and the stronger
    # pull keeps the model from memorising it.
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": hp.weight_decay},
              {"params": vectors, "weight_decay": 0.0}]  # fmt: skip
    # fused: one kernel updates all tensors at once, instead of a few kernels for each tensor
    return torch.optim.AdamW(groups, lr=hp.learning_rate, betas=(hp.beta1, hp.beta2), fused=fused)


def get_lr(step: int, hp: Hyperparameters) -> float:
    """Linear warm-up (big early steps with untuned Adam statistics do harm), then cosine decay."""
    if step < hp.warmup_iters:
        return hp.learning_rate * (step + 1) / hp.warmup_iters
    progress = min(1.0, (step - hp.warmup_iters) / max(1, hp.max_iters - hp.warmup_iters))
    return hp.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (hp.learning_rate - hp.min_lr)


@torch.no_grad()
def update_average(averaged: GPT, model: GPT, step: int, ema_decay: float) -> None:
    """Move the averaged weights 1 - decay of the way towards the trained ones, after each step.

    Each step is noisy, and the weights jitter around where training is heading; their moving
    average sits nearer the middle and scores a lower val loss. The first weights are worth little,
    so the memory starts short, (1 + step) / (10 + step), and grows to ema_decay (0.99: about the
    last 100 steps). With ema_decay=0 there is no average: averaged is model."""
    if averaged is model:
        return
    decay = min(ema_decay, (1 + step) / (10 + step))
    # average.lerp_(weight, 1 - decay), i.e. average += (1 - decay) * (weight - average), for
    # every tensor in one call (on a GPU a few kernels, not one per tensor)
    torch._foreach_lerp_(list(averaged.parameters()), list(model.parameters()), 1 - decay)


# -----------------------------------------------------------------------------
# Training: the loss estimate, one optimizer step, and the loop.


@torch.no_grad()
def estimate_loss(model: GPT, splits: dict, hp: Hyperparameters, hw: "Hardware") -> dict:
    """Mean loss over eval_iters batches of each split, the same ones each time, without dropout."""
    model.eval()
    losses = {}
    for name, data in splits.items():
        generator = torch.Generator().manual_seed(hp.seed + 1)
        batch_losses = []
        for _ in range(hp.eval_iters):
            starts = random_starts(len(data), hp.block_size, hp.batch_size, generator)
            x, y = get_batch(data, starts, hp.block_size, hw.device)
            with hw.autocast:
                _, loss = model(x, y)
            batch_losses.append(loss)
        losses[name] = sum(torch.stack(batch_losses).tolist()) / hp.eval_iters  # one wait for a GPU
    model.train()
    return losses


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    batches: list[tuple[torch.Tensor, torch.Tensor]], grad_clip: float, autocast,
) -> torch.Tensor:  # fmt: skip
    """One optimizer step on the micro-batches (x, y); returns their mean loss."""
    mean_loss = 0.0
    for i, (x, y) in enumerate(batches):
        # autocast runs the matmuls in bf16 (or fp16) while the weights, and so the optimizer's
        # updates, stay fp32: the speed of the small type, the accuracy of the big one
        with autocast:
            _, loss = model(x, y)
        # gradients add up over micro-batches: dividing by their number makes them the mean.
        # scaler (fp16 only) scales the loss up so small gradients do not round to 0 in fp16
        with sync_gradients(model, i == len(batches) - 1):  # torchrun only: after the last
            scaler.scale(loss / len(batches)).backward()
        mean_loss = mean_loss + loss.detach() / len(batches)
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not fp16's scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)  # optimizer.step(), skipped if fp16 gradients overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return mean_loss


def train(model: GPT, data: dict, tokenizer: Tokenizer, hp: Hyperparameters, hw: "Hardware",
          run: "Run") -> GPT:  # fmt: skip
    """Train for max_iters steps; returns model holding the best (averaged) weights saved."""
    optimizer = make_optimizer(model, hp, hw.fused_adamw)
    # evaluate, keep and sample a moving average of the weights (with ema_decay=0, the weights)
    averaged = copy.deepcopy(model).requires_grad_(False) if hp.ema_decay else model
    # fp16 (GPUs without bf16) needs the loss scaled up; bf16 has fp32's range: a no-op there
    scaler = torch.amp.GradScaler(hw.device_type, enabled=hw.dtype == torch.float16)
    # run puts --resume's state back into these; sampler keeps the batches' random generator
    sampler = run.start(model, averaged, optimizer, scaler)
    train_model = hw.for_training(model)  # the same weights, compiled or shared under torchrun
    for step in run.steps():  # start..max_iters inclusive; stops cleanly on Ctrl-C (Part 2)
        lr = get_lr(step, hp)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if step % hp.eval_interval == 0 or step == hp.max_iters:
            losses = estimate_loss(averaged, data, hp, hw)
            run.evaluated(step, lr, losses)  # log it; save the best model and --resume's state
            if losses["val"] <= hp.target_loss:
                break
        if hp.sample_interval and step % hp.sample_interval == 0:
            run.print_sample(averaged, tokenizer)  # watch gibberish turn into text
        if step == hp.max_iters:
            break  # the last step only evaluates, so a run always ends on a saved checkpoint
        starts = sampler.next_step()  # grad_accum_steps tensors of batch_size random_starts
        batches = [get_batch(data["train"], s, hp.block_size, hw.device) for s in starts]
        loss = train_step(train_model, optimizer, scaler, batches, hp.grad_clip, hw.autocast)
        update_average(averaged, model, step, hp.ema_decay)
        # the progress bar, tokens/s, and a loss of nan stops the run. A GPU runs the step while
        # this line and the next batch are prepared: the loss is read (waited for) now and then
        run.stepped(step, loss, lr)
    return run.finish(model)  # closes the log, draws loss.png, loads the best weights saved


# -----------------------------------------------------------------------------
# Sampling: turn the trained model into text.


def sample_next_token(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:  # fmt: skip
    """Pick one token per row of logits (B, vocab_size): returns (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # greedy: always the likeliest
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # renormalises itself


def next_token_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float
                     ) -> torch.Tensor:  # fmt: skip
    """What the next token is drawn from, (B, vocab_size); cut tokens get 0 (rows may sum < 1)."""
    logits = logits / temperature  # < 1 sharpens the distribution, > 1 flattens it
    if top_k > 0:  # keep the k likeliest tokens
        kth_best = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p < 1.0:  # nucleus: the fewest likeliest tokens whose probabilities reach top_p
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # of the likelier tokens
        sorted_probs[(mass_before >= top_p) & (mass_before > 0)] = 0.0  # the likeliest stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return probs


# -----------------------------------------------------------------------------
# main(): the whole story, from settings to samples.


def main(argv: list[str]) -> None:
    # hp: the knobs as --name=value flags set them, plus Part 2's modes and files (--sample, ...).
    # start: None (from scratch), GPT-2's weights (--init_from) or a stopped run (--resume).
    hp, start = read_settings(argv)
    hw = pick_hardware(hp)  # device, precision (autocast), attention, torchrun
    if hp.sample or hp.export_hf:  # no training: sample or export a saved model
        return use_saved_model(hp, hw, start)
    run = Run(hp, hw, start)  # the run's files: log, best model, --resume's state (Part 2)
    data, tokenizer = run.load_tokens()  # encoded, cached beside the text, split by split_tokens
    torch.manual_seed(hp.seed)  # the initial weights and the dropout masks
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size, block_size=hp.block_size, n_layer=hp.n_layer,
        n_head=hp.n_head, n_embd=hp.n_embd, dropout=hp.dropout, bias=hp.bias, gelu=hp.gelu,
        attention=hw.attention,
    )  # fmt: skip
    model = (run.pretrained or GPT(config)).to(hw.device)  # GPT-2 brings its own config
    model = train(model, data, tokenizer, hp, hw, run)
    print_samples(model, tokenizer, hp, hw)


# Part 2: the workshop. =========================================================================
# What makes Part 1 a tool that is fast everywhere and never loses work. Each section stands alone,
# headed by what it is for; Part 1 calls into them by name. The map, in file order (what Part 1,
# bigram.py, app.py and bench/ call in brackets):
#   Settings     the command line, its checks, --minutes' shape, --resume's saved settings
#                (read_settings, Settings, parse_overrides, check_numbers, check_at_least)
#   Hardware     device, precision, attention, compiling, the memory estimate
#                (pick_hardware, Hardware, pick_dtype, pick_attention, check_memory)
#   torchrun     joining processes, sharing gradients, agreeing on a value
#   Muon         --optimizer=muon: one optimizer of two (MuonAndAdamW, from make_optimizer)
#   Run files    the model, resume state, log and plot; the lock, the .prev copies, safe writes;
#                loading checkpoints; the batch sampler; Run: Ctrl-C, --minutes' fit, progress
#                (Run, load_checkpoint, load_model, UserError, run_command_line)
#   Tokens       tokenizers from settings and files, texts of any size, the token cache
#                (load_tokens, split_long_enough, check_readable, tokenizer_info)
#   Chunked loss GPT.forward's loss for big vocabularies (with_chunked_loss)
#   GPT-2        --init_from (from_pretrained) and --export_hf (export_hf)
#   Saved models --sample, generating text piece by piece, printing it on any terminal
#                (use_saved_model, generate_text, print_samples, attention_maps)

import signal  # noqa: E402 (the workshop's imports are kept out of the tutorial's way)
import sys  # noqa: E402

CTRL_C = signal.getsignal(signal.SIGINT)  # (ignored, in a job a script started in the background)
if CTRL_C is signal.default_int_handler:  # Ctrl-C while the rest loads: quiet too
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

import atexit  # noqa: E402
import codecs  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import ctypes  # noqa: E402
import dataclasses  # noqa: E402
import difflib  # noqa: E402
import errno  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import BinaryIO, NoReturn  # noqa: E402

import torch.distributed as dist  # noqa: E402
import torch.utils.checkpoint  # noqa: E402
from tqdm import tqdm  # noqa: E402

WINDOWS = sys.platform == "win32"


class UserError(Exception):
    """Something the user can fix: printed as one line, with no traceback, and the run stops."""


def fail(message: str) -> NoReturn:
    raise UserError(message)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during an evaluation or a sample: raised where the run is, which abandons it; its
    argument then saves the last whole step and ends (Run.stop, called by run_command_line)."""


# -----------------------------------------------------------------------------
# Settings beyond the knobs, read from the same command line, and the checks on all of them.


@dataclass
class Settings(Hyperparameters):
    """The knobs above, and the settings that choose hardware, a mode or a file."""

    # hardware: the same model and math, at the speed this machine allows
    device: str = "auto"  # 'auto' picks cuda > mps > cpu; or name one ('cpu', 'cuda:1')
    dtype: str = "auto"  # 'auto' asks the hardware; or 'float32', 'bfloat16', 'float16'
    compile: bool = False  # torch.compile the training step (on by default on CUDA)
    attention: str = "auto"  # 'by_hand', 'sdpa' (fused), or 'auto': see pick_attention
    batching: str = "random"  # 'random' window starts, or 'sliding': each window once an epoch
    stride: int = 0  # with batching='sliding': tokens between window starts (0 = block_size)
    # a time budget
    minutes: float = 0.0  # fit the whole run into this many minutes (0 = off): see BUDGETS
    # modes and files
    init_from: str = ""  # fine-tune OpenAI's GPT-2: 'gpt2', 'gpt2-medium', ... or a folder
    export_hf: str = ""  # --export_hf=DIR: write model_file as a Hugging Face GPT-2, then stop
    model_file: str = "trained_model.pth"  # best model; train_log.csv and loss.png go beside it
    resume: bool = False  # --resume: continue the run saved beside model_file (*.resume.pth)
    discard_unfinished: bool = False  # a new run may replace a kept run that had not ended
    sample: bool = False  # --sample: no training; print samples of model_file (or of init_from)
    prompt_file: str = ""  # read the prompt from this file


# On a CUDA GPU the classic "baby GPT" replaces the CPU defaults: the model of Karpathy's lecture,
# with the learning rates and weight decay of nanoGPT's config/train_shakespeare_char.py.
CUDA_DEFAULTS = dict(
    n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, batch_size=64,
    max_iters=5000, learning_rate=1e-3, min_lr=1e-4, weight_decay=0.1, eval_interval=500,
    eval_iters=200, compile=True,
)  # fmt: skip

OLD_NAMES = {"out_file": "model_file"}  # earlier spellings, still read so that scripts keep working
# --minutes: the shape and optimizer for a budget of at least so many minutes on a CPU, for the
# knobs the command line leaves unset (docs/speed.md and docs/experiments.md have the runs that
# chose them: Muon learns more per step than its steps cost, and more again with a higher learning
# rate at the same decay per step). The steps are then fitted to the budget from the run's own
# first steps (Run.fit_to_budget). Off the CPU (CUDA, MPS) the table does not apply.
MUON = dict(optimizer="muon", learning_rate=4e-3, min_lr=4e-4, weight_decay=0.5)
# tuned together, for Muon: a run that sets one of them, or trains with AdamW, keeps the defaults
TUNED = {"learning_rate", "min_lr", "weight_decay"}
BUDGETS = {
    1: dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=32, **MUON),
    5: dict(MUON),  # the default shape: python gpt.py is a five-minute run on a laptop
}
FITTED = ("max_iters", "eval_interval", "sample_interval")  # what --minutes decides as it runs
UNFITTED = 10**9  # their values until then
FIT_STEPS = 100  # the steps measured first, or all of the warm-up if it is shorter
MEASURING_SHARE = 0.1  # of the budget: past it, the steps measured so far are enough
EVALUATING_SHARE = 0.25  # of the budget, at most, for its 11 evaluations (evaluations then shorten)
USEFUL_STEPS = 100  # fewer training steps bought get a note; a tenth of them, a refusal
PATHS = ("input_file", "model_file", "prompt_file", "init_from", "export_hf")  # ~ means home
AT_LEAST = dict(
    n_layer=1, n_head=1, n_embd=1, batch_size=1, grad_accum_steps=1, eval_interval=1,
    eval_iters=1, num_samples=1, max_iters=0, warmup_iters=0, sample_interval=0,
    sample_tokens=0, max_new_tokens=0, top_k=0, temperature=0.0, grad_clip=0.0,
    weight_decay=0.0, min_lr=0.0, minutes=0.0,
    block_size=2,  # so that the 3/4 of a window that generating keeps (GPT.stream) is a token
)  # fmt: skip
AT_MOST = dict(num_samples=10_000)  # (the samples are made together, as one batch)
FRACTIONS = ("dropout", "beta1", "beta2", "ema_decay")  # from 0 up to, not including, 1
CHOICES = dict(
    tokenizer=("char", "gpt2"), gelu=("exact", "tanh"), attention=("auto", "by_hand", "sdpa"),
    batching=("random", "sliding"), dtype=("auto", "float32", "bfloat16", "float16"),
    optimizer=("adamw", "muon"),
)  # fmt: skip
MODES = ("sample", "export_hf", "resume")  # one at a time
MODEL_SHAPE = ("tokenizer", "n_layer", "n_head", "n_embd", "block_size", "bias", "gelu")
# what --sample and --export_hf read; any other setting given with them does nothing
SAMPLE_READS = {"sample", "model_file", "init_from", "prompt", "prompt_file", "num_samples", "seed",
                "max_new_tokens", "temperature", "top_k", "top_p", "kv_cache", "device", "dtype",
                "attention", *MODEL_SHAPE}  # fmt: skip
EXPORT_READS = {"export_hf", "model_file", "device"}


def parse_overrides(argv: list[str], settings: type = Settings) -> dict:
    """['--n_layer=4', '--sample'] -> {'n_layer': 4, 'sample': True}, checking names and types."""
    types = {f.name: f.type for f in dataclasses.fields(settings)}
    if "-h" in argv or "--help" in argv:  # every setting with its default and comment
        print(f"usage: python {sys.argv[0]} [--setting=value ...], with any of these settings:\n")
        for cls in reversed(settings.__mro__):
            if dataclasses.is_dataclass(cls):
                print(inspect.getsource(cls))
        raise SystemExit(0)
    overrides = {}
    for arg in argv:
        name, has_value, value = arg.removeprefix("--").partition("=")
        name = OLD_NAMES.get(name, name)
        if not arg.startswith("--"):
            fail(f"{arg!r} is not a setting: write settings as --name=value, with no spaces")
        if name not in types:
            close = difflib.get_close_matches(name, types, n=1)
            fail(f"unknown setting {arg!r}: " + (f"did you mean --{close[0]}?" if close else
                 f"see {settings.__name__} in {sys.argv[0]}"))  # fmt: skip
        kind = types[name]
        if kind is bool:
            value = value.lower() if has_value else "true"  # a bare --sample means --sample=true
            if value not in ("true", "false", "1", "0"):
                fail(f"--{name} takes true or false, not {value!r}")
            overrides[name] = value in ("true", "1")
            continue
        if not (value or name == "prompt"):  # an empty --export_hf= (an unset $DIR) must not train
            fail(f"--{name} needs a value: --{name}=...")
        if name in PATHS:
            value = os.path.expanduser(value)  # the shell leaves the ~ of --model_file=~/m alone
        try:
            overrides[name] = kind(value)
        except ValueError:
            what = {"int": "a whole number", "float": "a number"}[kind.__name__]
            fail(f"--{name} takes {what}, not {shorter(repr(value))}")
    return overrides


def check_at_least(settings: object, minimum: dict) -> None:
    """Each setting named in minimum is at least its value there (bigram.py uses this too)."""
    for name, low in minimum.items():
        if getattr(settings, name) < low:
            fail(f"--{name} must be at least {low}, not {getattr(settings, name)}")


def check_settings(hp: Settings) -> None:
    """Values no run can use, and files it cannot read or write, refused before either is done."""
    check_values(hp)
    check_files(hp)


def check_values(hp: Settings) -> None:
    """Values no run can use, whether typed or saved in a file."""
    check_at_least(hp, AT_LEAST)
    check_numbers(hp)
    for name, value in dataclasses.asdict(hp).items():
        if name in FRACTIONS and not 0 <= value < 1:
            fail(f"--{name} must be from 0 up to (not including) 1, not {value}")
        if name in CHOICES and value not in CHOICES[name]:
            fail(f"--{name} must be one of {', '.join(CHOICES[name])}, not {value!r}")
    modes = [f"--{mode}" for mode in MODES if getattr(hp, mode)]
    rules = [  # (a value that cannot work, what to say)
        (hp.n_embd % hp.n_head != 0, f"n_embd ({hp.n_embd}) must be divisible by n_head "
         f"({hp.n_head}): use one of --n_head={', '.join(map(str, divisors(hp.n_embd)))}"),
        (not 0 <= hp.stride <= hp.block_size, f"--stride must be from 1 to block_size "
         f"({hp.block_size}), or 0 for block_size; not {hp.stride}"),
        (hp.stride and hp.batching != "sliding", f"--stride={hp.stride} places sliding windows: "
         "add --batching=sliding, or drop --stride"),
        (not 0 < hp.top_p <= 1, f"--top_p must be above 0 and at most 1, not {hp.top_p}"),
        (0 < hp.temperature < 1e-6, "--temperature must be 0 (always the likeliest token) or at "
         f"least 1e-06, not {hp.temperature}"),
        (hp.min_lr > hp.learning_rate, f"--min_lr={hp.min_lr} is above --learning_rate="
         f"{hp.learning_rate}: add --min_lr={hp.learning_rate / 10:g}"),
        (len(modes) > 1, f"{' and '.join(modes)} do different things: run them one at a time"),
        (hp.optimizer == "muon" and not hasattr(torch.optim, "Muon"), "--optimizer=muon needs "
         f"torch 2.9 or later, not {torch.__version__}: pip install -U torch, or use adamw"),
    ]  # fmt: skip
    fail_on_first(rules)


def fail_on_first(rules: list[tuple[object, str]]) -> None:
    """rules: (a value that cannot work, what to say); the first that holds stops the run."""
    for broken, message in rules:
        if broken:
            fail(message)


def check_numbers(settings: object) -> None:
    """Numbers every run needs in range: finite, a seed torch takes, a learning rate above 0
    (bigram.py checks its settings with this too)."""
    for name, value in dataclasses.asdict(settings).items():
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"--{name} must be a finite number, not {value}")
        if isinstance(value, float) and abs(value) > LARGEST_FLOAT:
            fail(f"--{name} must be at most {LARGEST_FLOAT:.2g} (the largest float32), not {value}")
        most = AT_MOST.get(name, LARGEST_COUNT)
        if type(value) is int and name != "seed" and abs(value) > most:
            shown = f"{value:,}" if abs(value) < 10**18 else "a number of over 18 digits"
            fail(f"--{name} must be at most {most:,}, not {shown}")
    if not 0 <= settings.seed < 2**63 - 1:  # (evaluation seeds its own generator with seed + 1)
        fail(f"--seed must be from 0 to 2**63 - 2, not {settings.seed}")
    if not settings.learning_rate > 0:
        fail(f"--learning_rate must be above 0, not {settings.learning_rate}")


LARGEST_FLOAT = float(torch.finfo(torch.float32).max)  # the numbers are used in float32
LARGEST_COUNT = 2**31 - 1  # sizes, steps and counts: past it, the arithmetic overflows


def shorter(value: str) -> str:
    """A value as typed, cut to a readable length (a number may have thousands of digits)."""
    return value if len(value) <= 24 else f"{value[:12]}... ({len(value):,} characters)"


def divisors(n: int) -> list[int]:
    return [h for h in range(1, 17) if n % h == 0]  # the head counts that fit, up to 16


def check_files(hp: Settings) -> None:
    """The files a run reads and writes: present, writable, and never one in another's place."""
    if hp.prompt_file and not os.path.isfile(hp.prompt_file):
        fail(f"--prompt_file={hp.prompt_file}: there is no such file")
    folder = os.path.dirname(hp.model_file) or "."
    if not os.path.isdir(folder):
        fail(f"--model_file={hp.model_file}: there is no folder {folder!r}; create it first")
    if not os.path.basename(hp.model_file) or (
        os.path.exists(hp.model_file) and not os.path.isfile(hp.model_file)
    ):
        fail(f"--model_file={hp.model_file!r} must name a file, such as trained_model.pth, "
             "not a folder or a device")  # fmt: skip
    if hp.export_hf and os.path.exists(hp.export_hf) and not os.path.isdir(hp.export_hf):
        fail(f"--export_hf={hp.export_hf} is a file; name a folder to write the model into")
    if hp.export_hf and (others := not_an_export(hp.export_hf)):
        fail(f"--export_hf={hp.export_hf} holds files an export does not write ({others}): name "
             "a new or empty folder, or one an earlier --export_hf wrote")  # fmt: skip
    if hp.sample or hp.export_hf:
        return
    if not os.access(folder, os.W_OK):
        fail(f"--model_file={hp.model_file}: cannot write in {folder!r}; pick a folder you can "
             "write to")  # fmt: skip
    written = {}  # each file a run writes, by where it really is (links resolved)
    for what, path in run_outputs(hp).items():
        if (other := written.setdefault(os.path.realpath(path), what)) != what:
            fail(f"--model_file={hp.model_file} would write {other} and {what} to the same file, "
                 f"{path}: pick another name")  # fmt: skip
    for text in (hp.input_file, hp.prompt_file):
        if text and os.path.realpath(text) in written:
            fail(f"--model_file={hp.model_file} would overwrite the text it trains on, {text}: "
                 "pick another name")  # fmt: skip


def run_outputs(hp: Settings) -> dict[str, str]:
    """Every file a training run writes (the token caches of both tokenizers, for a later run)."""
    files = dict(zip(("the model", "the resume state", "the log", "the loss plot"),
                     run_files(hp.model_file)))  # fmt: skip
    files |= {f"{what} kept from the earlier run": earlier_name(f) for what, f in files.items()}
    for kind in ("char", "gpt2"):
        files[f"the {kind} token cache"] = cache = f"{hp.input_file}.{kind}.tokens"
        files[f"the {kind} token cache's description"] = cache + ".json"
    return files


def read_settings(argv: list[str]) -> tuple[Settings, object]:
    """The settings for this run, and what it starts from: None (from scratch), GPT-2's model
    (--init_from) or the state of a stopped run (--resume), whose settings it keeps; with
    --sample or --export_hf, how to load the saved model."""
    overrides = parse_overrides(argv)
    device = setup_distributed(pick_device(overrides.get("device", "auto")))
    settings = {**(CUDA_DEFAULTS if device.startswith("cuda") else {}), **overrides}
    state = None
    if overrides.get("resume") and "minutes" in overrides:
        fail("--minutes fits a new run; a resumed run keeps its steps: drop --minutes")
    if overrides.get("resume"):
        model_file = Settings(**settings).model_file
        state = load_resume_state(model_file)
        saved = saved_settings(state["hyperparameters"], resume_path(model_file))
        settings = resumed_settings(saved, overrides)
    hp = Settings(**{**settings, "device": device})
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    if hp.minutes and not (state or hp.sample or hp.export_hf):
        hp = budget_settings(hp, overrides, world_size)  # checked with the knobs given
    check_settings(hp)
    if hp.grad_accum_steps % world_size:  # every process needs the same number of micro-batches
        rounded = -(-hp.grad_accum_steps // world_size) * world_size
        print(f"{world_size} processes: grad_accum_steps raised from {hp.grad_accum_steps} "
              f"to {rounded}")  # fmt: skip
        hp = dataclasses.replace(hp, grad_accum_steps=rounded)
    if state and state["finished"] and state["step"] == hp.max_iters:
        print(f"the saved run already ended at step {hp.max_iters} of --max_iters={hp.max_iters}; "
              f"to train on, add --max_iters=M with M above {hp.max_iters}")  # fmt: skip
        raise SystemExit(0)
    if state and state["step"] > hp.max_iters:
        fail(f"the saved run is at step {state['step']}, past --max_iters={hp.max_iters}: "
             "raise --max_iters to go on")  # fmt: skip
    if "prompt" in overrides and "prompt_file" in overrides:
        fail("--prompt and --prompt_file both give the prompt: keep one of them")
    if hp.prompt_file and "prompt" not in overrides:  # from here on, the prompt is just text
        hp = dataclasses.replace(hp, prompt=read_text(hp.prompt_file))
    problem = compile_problem(device) if hp.compile and not (hp.sample or hp.export_hf) else ""
    if problem and "compile" in overrides:
        fail(f"--compile=True cannot work here: {problem}; use --compile=False")
    if problem:
        print(f"not compiling: {problem}")
        hp = dataclasses.replace(hp, compile=False)
    if hp.sample or hp.export_hf:  # loaded once the hardware is known
        mode, reads = ("sample", SAMPLE_READS) if hp.sample else ("export_hf", EXPORT_READS)
        if ignored := [f"--{name}" for name in overrides if name not in reads]:
            print(f"--{mode} ignores {', '.join(ignored)}: they are for training a model")
        return hp, functools.partial(saved_model, hp, overrides)
    if hp.init_from and not state:  # fine-tune GPT-2: its weights, its shape and tokenizer
        return start_from_gpt2(hp, overrides)
    return hp, state


def budget_settings(hp: Settings, overrides: dict, world_size: int) -> Settings:
    """--minutes: the budget's shape for the knobs not given, and the steps left open until the
    first ones are measured (until then no evaluation or sample but step 0's)."""
    rules = [
        (world_size > 1, "--minutes measures one process's steps: under torchrun, set --max_iters"),
        (given := [f"--{name}" for name in FITTED if name in overrides],
         f"--minutes chooses {', '.join(given)} itself: drop {' and '.join(given)}"),
        (hp.warmup_iters < 10, "--minutes measures the first steps, within the warm-up: "
         "--warmup_iters must be at least 10"),
    ]  # fmt: skip
    fail_on_first(rules)
    shape = {}
    if hp.device == "cpu" and not hp.init_from:
        shape = BUDGETS[max((m for m in BUDGETS if m <= hp.minutes), default=min(BUDGETS))]
    unset = {name: value for name, value in shape.items() if name not in overrides}
    if not hasattr(torch.optim, "Muon"):  # an older torch: AdamW
        unset.pop("optimizer", None)
    if unset.get("optimizer", overrides.get("optimizer")) != "muon" or overrides.keys() & TUNED:
        unset = {name: value for name, value in unset.items() if name not in TUNED}
    return dataclasses.replace(hp, **unset, **dict.fromkeys(FITTED, UNFITTED))


def saved_settings(saved: dict, path: str) -> dict:
    """The settings a file holds, read and checked as the command line's are (a damaged or
    hand-made file is refused in one line, as a mistyped flag is); those it lacks keep their
    defaults, and the model's file is where it was found (see resumed_settings)."""
    known = {f.name for f in dataclasses.fields(Settings)} - {"model_file"}
    as_typed = [f"--{k}={v}" for k, v in saved.items() if k in known and v != ""]
    try:
        settings = Settings(**parse_overrides(as_typed))
        check_values(settings)
    except UserError as e:
        fail(f"the settings saved in {path!r} cannot work ({e}): train anew, or use another file")
    return {k: v for k, v in dataclasses.asdict(settings).items() if k in known}


def refuse_another_shape(saved: dict, overrides: dict, doing: str, advice: str) -> None:
    """A trained model's shape is fixed: a flag asking for another would be ignored, or break it."""
    for name in MODEL_SHAPE:
        if name in overrides and overrides[name] != saved[name]:
            fail(f"cannot {doing} with --{name}={overrides[name]}: the saved model has "
                 f"{name}={saved[name]}; {advice}")  # fmt: skip


def resumed_settings(saved: dict, overrides: dict) -> dict:
    """A resumed run keeps its settings; the command line may change all but the model's shape."""
    refuse_another_shape(
        saved, overrides, "resume", "drop that flag, or start a new run without --resume"
    )
    trained_with = saved.get("optimizer", "adamw")  # (runs saved before the choice: AdamW)
    if overrides.get("optimizer", trained_with) != trained_with:  # its state is that optimizer's
        fail(
            f"cannot resume with --optimizer={overrides['optimizer']}: the saved run trained "
            f"with {trained_with}; drop the flag, or start a new run without --resume"
        )
    # the files are where the state was found, not where the run was started (a copied folder
    # resumes into the copy, never into the original): saved_settings leaves model_file out
    return {**saved, **overrides}


# -----------------------------------------------------------------------------
# The hardware: device, precision, attention and compiling, decided once into one object.


@dataclass
class Hardware:
    device: str  # 'cpu', 'cuda', 'cuda:1' or 'mps'
    dtype: torch.dtype  # what autocast runs matmuls in; the weights stay float32
    autocast: contextlib.AbstractContextManager  # entered around every forward pass
    attention: str  # 'by_hand' or 'sdpa' for a model trained with these settings
    compile: bool
    rank: int = 0  # this process, of world_size under torchrun
    world_size: int = 1

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]  # 'cuda:1' -> 'cuda'

    @property
    def master(self) -> bool:
        return self.rank == 0  # the process that prints, logs and saves

    @property
    def fused_adamw(self) -> bool:
        return self.device_type in (
            "cpu",
            "cuda",
        )  # PyTorch has no fused AdamW for Apple GPUs (mps)

    def for_training(self, model: GPT) -> nn.Module:
        """What the training step calls: model, its loss computed in chunks for big vocabularies,
        compiled if asked, and wrapped for torchrun. Evaluating, sampling, saving use model."""
        train_model = with_chunked_loss(model)
        if self.compile:
            print("compiling the training step: the first step waits for it "
                  "(--compile=False skips this)")  # fmt: skip
            train_model = torch.compile(train_model)
        if self.world_size > 1:  # averages the gradients of all processes during backward()
            train_model = nn.parallel.DistributedDataParallel(train_model)
        return train_model


def pick_hardware(hp: Settings) -> Hardware:
    """The device read_settings chose, the precision it does well, and what follows from them."""
    device, world_size = hp.device, dist.get_world_size() if dist.is_initialized() else 1
    if device.startswith("cuda:"):  # the current GPU: the one the dtype probe asks
        torch.cuda.set_device(device)
    dtype, why = pick_dtype(device, hp.dtype, world_size)
    print(f"{device}, {str(dtype).removeprefix('torch.')}: {why}")
    autocast = contextlib.nullcontext()  # fp32: nothing to do (and no autocast to warn)
    if dtype != torch.float32:
        autocast = torch.autocast(device.split(":")[0], dtype=dtype)
    if device == "cpu":
        keep_freed_memory()
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (TF32)
        torch.backends.cudnn.allow_tf32 = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    attention = pick_attention(hp.attention, device, dtype, hp.block_size)
    return Hardware(device, dtype, autocast, attention, hp.compile, rank, world_size)


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps_available()}
    kind, _, index = requested.partition(":")  # 'cuda:1' -> 'cuda', '1'
    if not available.get(kind):
        fail(f"--device={requested} is not available here: use --device=auto or --device=cpu")
    gpus = torch.cuda.device_count()
    if kind == "cuda" and index and not (index.isdigit() and int(index) < gpus):
        fail(f"--device={requested}: this machine's GPUs are cuda:0 to cuda:{gpus - 1}")
    return "cpu" if kind == "cpu" else requested  # 'cpu:0' is the one CPU, which is 'cpu' here


def mps_available() -> bool:
    return torch.backends.mps.is_available()


def good_dtypes(device: str) -> dict[str, str]:
    """The precisions this device does well, best first: the best with the reason, the rest with
    '' (so that --dtype can ask for them). Devices of one kind list them in the same order."""
    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported(including_emulation=False):  # emulated bf16 is slow
            return {"bfloat16": "this GPU supports bf16", "float16": "", "float32": ""}
        return {"float16": "this GPU has no bf16, so fp16 with a gradient scaler", "float32": ""}
    if device == "cpu":
        # CPUs with AVX-512 BF16 or AMX multiply bf16 matrices natively, several times faster
        # than fp32; elsewhere bf16 is emulated and slower. Asking the CPU, not timing it, keeps
        # the choice (and so the run) the same however busy the machine is.
        # fp16 is emulated on most CPUs: slow, but it runs older GPUs' path (the gradient scaler)
        native = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's checks
        if any(getattr(torch.cpu, check, lambda: False)() for check in native):
            return {
                "bfloat16": "this CPU multiplies bf16 natively (AVX-512 BF16 or AMX)",
                "float32": "",
                "float16": "",
            }
        return {"float32": "this CPU has no native bf16 matmul", "float16": ""}
    return {"float32": f"the safe choice on {device}", "bfloat16": "", "float16": ""}


def pick_dtype(device: str, requested: str, world_size: int = 1) -> tuple[torch.dtype, str]:
    """The precision matmuls run in under autocast, and why. Under torchrun every process calls
    this at the same point, to swap lists with the others."""
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    good = own = good_dtypes(device)
    if world_size > 1:  # keep what every process does well: machines may differ
        everyone = [None] * world_size
        dist.all_gather_object(everyone, list(good))
        good = {name: why for name, why in good.items() if all(name in them for them in everyone)}
    if requested == "auto":
        best = next(iter(good))
        own_best = next(iter(own))
        return names[best], good[best] or (
            f"the best every process does well (this one alone would use {own_best})"
        )
    if requested not in good:
        kind = device.split(":")[0]
        which = f"this {kind} cannot" if requested not in own else f"not every process's {kind} can"
        fail(f"{which} do {requested} well: use --dtype={', '.join(good)} or auto")
    return names[requested], "asked for with --dtype"


def pick_attention(requested: str, device: str, dtype: torch.dtype, block_size: int) -> str:
    """'auto': by hand on a CPU running bf16 with a context of at most 256, else the fused SDPA.

    Under bf16 on a CPU the explicit version was the faster for short contexts, and in fp32 the
    slower (docs/speed.md has the measurements). The fused kernel never stores the (T, T)
    weights, so for long contexts it needs far less memory; on GPUs it is flash attention.
    """
    if requested != "auto":
        return requested
    short_bf16_on_cpu = device == "cpu" and dtype == torch.bfloat16 and block_size <= 256
    return "by_hand" if short_bf16_on_cpu else "sdpa"


def keep_freed_memory() -> None:
    """Ask the C library to keep the memory PyTorch frees, instead of handing it back.

    Every training step frees and allocates the same activation-sized blocks again. By default
    Linux's C library returns such blocks to the system, which gives them back as fresh pages,
    each zeroed on its first touch: a noticeable part of a CPU step. glibc only; elsewhere this
    does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GB of freed memory
        libc.mallopt(-3, 1 << 25)  # M_MMAP_THRESHOLD: blocks up to 32 MB come from that memory
    except (OSError, AttributeError):  # no glibc, or no mallopt in it
        pass


def training_memory(hp: Settings, vocab_size: int, hw: Hardware) -> tuple[int, int, int]:
    """Bytes one process needs to train: (weights, gradients, the optimizer's moments and the
    average; what the forward pass keeps for the backward one; a step's micro-batches, all made
    before it begins). It counts only what training adds, so it stays below the peaks measured
    (docs/speed.md#memory): it refuses only what cannot fit."""
    C, L, T, B = hp.n_embd, hp.n_layer, hp.block_size, hp.batch_size
    params = (vocab_size + T) * C + L * (12 * C * C + 13 * C) + 2 * C
    state = params * 4 * (5 if hp.ema_decay else 4)  # AdamW keeps two moments per weight
    if hp.optimizer == "muon":  # Muon keeps one for the blocks' matrices
        state -= L * 12 * C * C * 4
    size = 2 if hw.dtype != torch.float32 else 4  # bytes per activation under autocast
    kept = B * T * L * C * (16 * size + 16)  # each block's inputs, q, k, v, MLP, in two dtypes
    if hw.attention == "by_hand":  # the (T, T) attention weights of every head
        kept += B * hp.n_head * T * T * L * (size + 0.5)
    chunk = CHUNK_LOGITS // vocab_size if vocab_size > CHUNKED_ABOVE else B * T  # (ChunkedLoss)
    kept += 3 * min(B * T, chunk) * vocab_size * 4
    batches = hp.grad_accum_steps * (16 * B * T + 3 * TENSOR_BYTES)  # x, y and the starts
    return state, int(kept), batches


TENSOR_BYTES = 500  # what a small tensor costs beyond its numbers (its object and allocation)


def free_memory(device: str) -> int | None:
    """Bytes the device has free, or None where that cannot be asked: a GPU's own memory; on Linux
    what the system could hand out, or less where a container's limit (cgroup v2 or v1) says so;
    on Windows the physical memory available; on a Mac, where memory is compressed and swapped
    rather than refused, all of it (so only what can never fit is refused)."""
    if device.startswith("cuda"):  # by index: not every torch takes the name 'cuda' here
        index = torch.device(device).index
        return torch.cuda.mem_get_info(torch.cuda.current_device() if index is None else index)[0]
    if device == "mps":
        return None  # shared with the system, which swaps: no limit to check against
    if WINDOWS:
        return windows_available_memory()
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, ValueError):
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return None
    free = []
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            free += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable")]
    for limit, used in CGROUP_MEMORY:
        with contextlib.suppress(OSError, ValueError):  # 'max' (no limit) is not a number
            with open(limit) as limit_file, open(used) as used_file:
                free.append(int(limit_file.read()) - int(used_file.read()))
    return min(free, default=None)


CGROUP_MEMORY = [  # a container's memory limit and use: cgroup v2, then v1 (older Docker hosts)
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
]


def windows_available_memory() -> int | None:
    """The physical memory Windows could hand out now (GlobalMemoryStatusEx's ullAvailPhys)."""

    class MemoryStatus(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    *((name, ctypes.c_ulonglong) for name in ("ullTotalPhys", "ullAvailPhys",
                      "ullTotalPageFile", "ullAvailPageFile", "ullTotalVirtual",
                      "ullAvailVirtual", "ullAvailExtendedVirtual"))]  # fmt: skip

    status = MemoryStatus(dwLength=ctypes.sizeof(MemoryStatus))
    try:
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return status.ullAvailPhys
    except (AttributeError, OSError):
        pass
    return None


def check_memory(hp: Settings, vocab_size: int, hw: Hardware) -> str:
    """Refuse settings that cannot fit in memory before allocating anything; else describe the
    need, for the model line."""
    state, kept, batches = training_memory(hp, vocab_size, hw)
    processes = hw.world_size if hw.device_type == "cpu" else 1  # torchrun on CPU: one machine
    need, free = (state + kept + batches) * processes, free_memory(hw.device)
    free_word = "in all" if sys.platform == "darwin" and hw.device_type == "cpu" else "free"
    if free is not None and need > free:
        parts = {"--n_layer or --n_embd": state, "--batch_size or --block_size": kept,
                 "--grad_accum_steps": batches}  # fmt: skip
        made = (f", {hp.grad_accum_steps:,} micro-batches made at once {batches / 1e9:.2g} GB"
                if batches > min(state, kept) else "")  # fmt: skip
        fail(f"training needs about {need / 1e9:.3g} GB (the model's state {state / 1e9:.2g} GB, "
             f"the activations of {hp.batch_size} x {hp.block_size} tokens "
             f"{kept / 1e9:.2g} GB{made}) but {hw.device_type} has {free / 1e9:.3g} GB "
             f"{free_word}: lower {max(parts, key=parts.get)}")  # fmt: skip
    return f"training needs about {need / 1e9:.2g} GB" + (
        f" of the {free / 1e9:.3g} GB {free_word}" if free else ""
    )


def compile_problem(device: str) -> str:
    """Why torch.compile cannot work here, or '' when it can."""
    if not torch._dynamo.is_dynamo_supported():
        return f"torch.compile does not support Python {sys.version.split()[0]} yet"
    if device == "mps":
        return "torch.compile does not support Apple GPUs (mps) well yet"
    if device == "cpu":  # it writes C++ and builds it with the compiler PyTorch was built with
        compilers = (os.environ.get("CXX") or "cl",) if WINDOWS else (
            os.environ.get("CXX", ""), "g++", "clang++")  # fmt: skip
        if not any(shutil.which(cxx) for cxx in compilers if cxx):
            return ("torch.compile turns the model into C++ on a CPU and needs a compiler ("
                    + ("Visual Studio's cl, in a Developer Command Prompt" if WINDOWS else
                       "install g++ or clang") + ")")  # fmt: skip
        return ""
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (7, 0):  # triton, which compiles for GPUs, starts at Volta
        return (f"torch.compile's GPU compiler (triton) needs compute capability 7.0 or newer; "
                f"this GPU has {major}.{minor}")  # fmt: skip
    if not torch.utils._triton.has_triton():
        return (
            "torch.compile needs triton on a GPU, which has no official Windows build: use WSL2"
            if WINDOWS
            else "torch.compile needs triton on a GPU (pip install triton)"
        )
    return ""


# -----------------------------------------------------------------------------
# torchrun: several processes, each with its own share of every batch, as one run.


def setup_distributed(device: str) -> str:
    """Under torchrun (which sets RANK, LOCAL_RANK, WORLD_SIZE): join the other processes, give
    each its own GPU, and send the stdout of all but rank 0 to nowhere, so a print() speaks once
    (errors still reach stderr from every process). Without torchrun: one ordinary process."""
    if "RANK" not in os.environ:
        return device
    for name in TORCHRUN_SETS:  # a shell that set some of them by hand
        if not (value := os.environ.get(name, "")).isdecimal() or not value.isascii():
            fail(f"{name} is {'set to ' + repr(value) if name in os.environ else 'not set'}, but "
                 "torchrun sets RANK, LOCAL_RANK and WORLD_SIZE to whole numbers: start gpt.py "
                 "with torchrun, or unset RANK to run one process")  # fmt: skip
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device == "mps":
        fail("torchrun cannot connect processes on Apple GPUs (mps): add --device=cpu, "
             "or run `python gpt.py`")  # fmt: skip
    backend = "nccl" if device.startswith("cuda") else "gloo"  # between GPUs, between CPUs
    if not (dist.is_available() and getattr(dist, f"is_{backend}_available")()):
        fail(f"this PyTorch cannot connect processes with {backend}: run `python gpt.py` without "
             f"torchrun, or install a PyTorch build with {backend}")  # fmt: skip
    try:
        dist.init_process_group(backend)
    except Exception as e:
        fail(f"torchrun could not connect {os.environ['WORLD_SIZE']} processes with the {backend} "
             f"backend ({type(e).__name__}: {e})")  # fmt: skip
    atexit.register(dist.destroy_process_group)  # leave the group however the run ends
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
    if rank != 0:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # one process speaks for all
    return device


TORCHRUN_SETS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def sync_gradients(model: nn.Module, now: bool) -> contextlib.AbstractContextManager:
    """Under torchrun, backward() shares gradients between processes; with several micro-batches
    a step shares them once, after the last. Without torchrun this does nothing."""
    if isinstance(model, nn.parallel.DistributedDataParallel) and not now:
        return model.no_sync()
    return contextlib.nullcontext()


def agree_on(value: float, hw: Hardware) -> float:
    """Rank 0's value, in every process. Their val losses differ by rounding at most (GPUs of
    different kinds round differently), and all must keep the same model and stop together."""
    if hw.world_size == 1:
        return value
    tensor = torch.tensor(value, dtype=torch.float64, device=hw.device)  # the exact Python float
    dist.broadcast(tensor, src=0)
    return tensor.item()


def anyone(flag: bool, hw: Hardware) -> bool:
    """Whether flag is set in any process: all stop at the same step, or the rest would wait."""
    if hw.world_size == 1:
        return flag
    tensor = torch.tensor(float(flag), device=hw.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def resume_command(model_file: str, world_size: int) -> str:
    """What to type to continue a run stopped with Ctrl-C."""
    flags = "--resume"
    if model_file != Settings.model_file:
        flags += " " + quote(f"--model_file={model_file}")
    script = quote(sys.argv[0])  # gpt.py, as the user typed it (it may be in another folder)
    if world_size == 1:
        return f"{python_command()} {script} {flags}"
    if world_size == int(os.environ.get("LOCAL_WORLD_SIZE", world_size)):  # all on this machine
        return f"torchrun --nproc_per_node={world_size} {script} {flags}"
    # processes on other machines too: only rank 0 saved the file, and every process reads it
    return (f"the same torchrun command on every machine, with {flags}, once every machine has "
            f"{resume_path(model_file)}")  # fmt: skip


def quote(arg: str) -> str:
    """arg as the user's shell reads it back: POSIX quotes for a Unix shell; cmd.exe and
    PowerShell keep those as part of the argument, and take double quotes instead, around any
    character they treat specially (a space, & | < > ( ) ; and more; % and $ stay theirs)."""
    if not WINDOWS:
        return shlex.quote(arg)
    quoted = subprocess.list2cmdline([arg])  # quotes and backslashes as Windows programs read them
    if quoted.startswith('"') or re.fullmatch(r"[\w@+=:,./\\-]+", arg):
        return quoted
    ending = len(quoted) - len(quoted.rstrip("\\"))  # backslashes before the closing quote double
    return '"' + quoted + "\\" * ending + '"'


def python_command() -> str:
    """What runs this Python from the user's shell: 'python', or 'python3' where that is its only
    name (stock macOS and many Linux systems have no 'python'), else its whole path."""

    def runs_this(path: str) -> bool:  # (a virtual environment's python is a link: not followed)
        return os.path.normcase(os.path.abspath(path)) == os.path.normcase(sys.executable)

    for name in ("python", "python3"):
        if (found := shutil.which(name)) and runs_this(found):
            return name
    return quote(sys.executable)


# -----------------------------------------------------------------------------
# --optimizer=muon: Muon for the blocks' weight matrices, AdamW for the rest, stepped as one.


class MuonAndAdamW:
    """torch.optim.Muon for the 2-D weights inside the blocks; make_optimizer's AdamW for the
    embeddings (and so the tied head), biases and gains. To Part 1's loop, GradScaler and
    --resume it is one optimizer: its param_groups are both optimizers' groups.

    Muon keeps a momentum of each matrix's gradient and steps along the nearest orthogonal
    matrix to it (five Newton-Schulz iterations, in bf16): every direction of the matrix moves by
    the same amount, where Adam's step follows the few directions in which the gradient is large.
    'match_rms_adamw' scales its step to AdamW's size, so the same learning rate, schedule and
    weight decay mean a step of the same size (the pair learns best with a higher learning rate:
    see MUON). It learns more per step and costs a few small matmuls per matrix
    per step (docs/experiments.md has both). An embedding's rows are tokens, not directions in a
    space, so AdamW keeps them."""

    def __init__(self, model: GPT, hp: Hyperparameters, fused: bool) -> None:
        hidden = [p for name, p in model.named_parameters()
                  if name.startswith("blocks.") and p.dim() == 2]  # fmt: skip
        rest = nn.ParameterList(p for p in model.parameters() if all(p is not h for h in hidden))
        self.parts = {
            "muon": torch.optim.Muon(hidden, lr=hp.learning_rate, weight_decay=hp.weight_decay,
                                     adjust_lr_fn="match_rms_adamw"),
            "adamw": make_optimizer(rest, dataclasses.replace(hp, optimizer="adamw"), fused),
        }  # fmt: skip

    @property
    def param_groups(self) -> list[dict]:  # asked anew: load_state_dict replaces the groups
        return [group for part in self.parts.values() for group in part.param_groups]

    def step(self) -> None:
        for part in self.parts.values():
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


# -----------------------------------------------------------------------------
# The run's files: the best model, the state to --resume from, the log, the plot; Ctrl-C.

FORMAT = 2  # of the checkpoints this gpt.py writes; a file of another format is refused
MODEL_FILE = dict(model=dict, config=dict, tokenizer=dict, step=int, best_val_loss=float,
                  hyperparameters=dict)  # fmt: skip
RESUME_FILE = dict(trained_model=dict, optimizer=dict, sampler=dict, scaler=dict,
                   torch_rng=torch.Tensor, cuda_rng=list, elapsed_s=float,
                   finished=bool)  # fmt: skip


def resume_path(model_file: str) -> str:
    """The latest state lives beside the best model: trained_model.pth -> *.resume.pth."""
    return os.path.splitext(model_file)[0] + ".resume.pth"


def log_path(model_file: str) -> str:
    return beside(model_file, "train_log.csv")


def plot_path(model_file: str) -> str:
    return beside(model_file, "loss.png")


def beside(model_file: str, name: str) -> str:
    """name in model_file's folder; for the model a new run kept (*.prev.pth), the copy kept with
    it (train_log.prev.csv), so that --resume --model_file=trained_model.prev.pth goes on with
    that run, log and plot included."""
    root, path = os.path.splitext(model_file)[0], os.path.join(os.path.dirname(model_file), name)
    while root.endswith(".prev"):
        root, path = root.removesuffix(".prev"), earlier_name(path)
    return path


@contextlib.contextmanager
def replacing(path: str, advice: str) -> Iterator[BinaryIO]:
    """A file to write that replaces path once it is whole. It is a new temporary file beside
    path, created exclusively (never an existing file, never through a link), forced to disk, then
    renamed over path: the rename is atomic, so a crash at any moment leaves the old file or the
    new one, never half of one. On any failure the temporary file goes and path is untouched."""
    folder, name = os.path.split(path)
    tmp = ""
    try:  # the name says it is ours, and the process id whose (see clean_stale_temps)
        prefix = f".{name}.{os.getpid()}.{TEMP_MARK}"
        handle, tmp = tempfile.mkstemp(dir=folder or ".", prefix=prefix, suffix=".tmp")
        os.chmod(tmp, 0o666 & ~UMASK)  # as open() would make it (mkstemp keeps it private)
        with os.fdopen(handle, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path)
    except (OSError, RuntimeError) as e:  # a full disk (torch's zip writer: RuntimeError), ...
        reason = getattr(e, "strerror", None) or str(e).split("\n")[0][:80]
        if isinstance(e, RuntimeError) and shutil.disk_usage(folder or ".").free < 1 << 20:
            reason = "No space left on device"  # torch's zip writer only says "unexpected pos"
        fail(f"cannot write {path!r} ({reason}): {held_open_advice(e, path)}{advice}")
    finally:
        if tmp and os.path.exists(tmp):
            with contextlib.suppress(OSError):  # (Windows: a virus scanner may hold it a moment)
                os.remove(tmp)


def replace(tmp: str, path: str, tries: int = 10) -> None:
    """os.replace(tmp, path). On Windows a file that another program has open cannot be replaced,
    and a virus scanner or the search indexer opens new files for a moment: try again for about
    two seconds before giving up."""
    for attempt in range(tries):
        try:
            return os.replace(tmp, path)
        except PermissionError:
            if not WINDOWS or attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def held_open_advice(error: BaseException, path: str) -> str:
    """The likely cause of a file that exists but cannot be replaced or added to: another program
    holding it open (Windows refuses; the log open in Excel), said before the usual advice."""
    held = isinstance(error, PermissionError) and os.path.isfile(path)
    return "close any program that has it open, or " if held else ""


UMASK = os.umask(0o022)  # (reading the umask means setting it: this sets it back as it was)
os.umask(UMASK)


def clean_stale_temps(folder: str) -> None:
    """Remove the temporary files of runs that were killed mid-write: only names replacing() makes
    (.trained_model.pth.1234.gpt-x1y2z3.tmp), and only where their process is gone."""
    for name in os.listdir(folder or "."):
        path = os.path.join(folder, name)
        if (match := TEMP_NAME.fullmatch(name)) and left_behind(path, int(match[1])):
            with contextlib.suppress(OSError):
                os.remove(path)


TEMP_MARK = "gpt-"
TEMP_NAME = re.compile(r"\..+\.(\d+)\." + TEMP_MARK + r"\w+\.tmp")
STALE_SECONDS = 3600  # where a process cannot be asked about, a temp file this old is left behind


def left_behind(path: str, pid: int) -> bool:
    """Whether the process that wrote path has ended. Windows cannot be asked with signal 0 (its
    os.kill(pid, 0) sends Ctrl-C): there, a file nobody has written to for an hour is."""
    if WINDOWS:
        with contextlib.suppress(OSError):
            return time.time() - os.path.getmtime(path) > STALE_SECONDS
        return False
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists, but is another user's
        pass
    return False


RUN_LOCK = ".gpt.lock"  # in a training run's folder, held while it runs (see claim_folder)
HELD_LOCKS = []  # the open lock files: a lock lasts as long as its file is open


def claim_folder(model_file: str) -> None:
    """One training run at a time in a folder: two would replace each other's files and each
    other's *.prev copies, and lose the earlier run. The lock is the operating system's, on an
    open file, so it ends with the process however it ends: a killed run leaves none behind."""
    folder = os.path.dirname(model_file) or "."
    path = os.path.join(folder, RUN_LOCK)
    try:
        handle = open(path, "a+")  # created if needed, never emptied by opening
    except OSError as e:
        fail(f"cannot write {path!r} ({e.strerror}): pick a folder you can write to")
    try:
        handle.seek(0)
        if WINDOWS:  # (msvcrt and fcntl each exist only on their own system)
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = ""
        with contextlib.suppress(OSError):  # (Windows does not let a locked byte be read)
            holder = handle.read().strip()
        who = f" (process {holder})" if holder.isdecimal() else ""
        fail(
            f"another gpt.py run{who} is training in {os.path.abspath(folder)!r}: wait for it "
            "to end, or train in another folder (a run writes its model, log and plot there)"
        )
    handle.truncate(0)
    handle.write(str(os.getpid()))  # to name the run that holds it
    handle.flush()
    HELD_LOCKS.append(handle)


def run_files(model_file: str) -> list[str]:
    """The files of the run whose best model is model_file."""
    return [model_file, resume_path(model_file), log_path(model_file), plot_path(model_file)]


def earlier_name(path: str) -> str:
    """Where a new run keeps the file an earlier run left: trained_model.pth ->
    trained_model.prev.pth, train_log.csv -> train_log.prev.csv, and so on."""
    root, extension = os.path.splitext(path)
    if path.endswith(".resume.pth"):  # so that it stays the resume state of the kept model
        root, extension = path.removesuffix(".resume.pth"), ".resume.pth"
    return root + ".prev" + extension


def describe_earlier_model(model_file: str) -> None:
    """A new run that will replace a model says which, and where it will keep it."""
    if not os.path.exists(model_file):
        return
    saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(model_file)))
    try:
        old = load_checkpoint(model_file, "cpu")
        what = f"step {old['step']:,}, val loss {old['best_val_loss']:.4f}"
    except UserError:
        what = "not a model this gpt.py can read"
    print(f"{model_file} holds an earlier run's model, saved {saved}:\n  {what}; this run "
          f"keeps it as {earlier_name(model_file)}")  # fmt: skip


def protect_unfinished_runs(hp: Settings) -> None:
    """A new run keeps the earlier run's files as *.prev, replacing those kept before. A run that
    has not ended (stopped with Ctrl-C, or killed) can still be resumed: keeping it is said, with
    how to go on with it, and replacing it needs --discard_unfinished."""
    if not any(map(os.path.exists, run_files(hp.model_file))):
        return  # nothing to keep, so nothing kept before is replaced
    earlier = earlier_name(hp.model_file)
    if (where := unfinished_run(resume_path(earlier))) and not hp.discard_unfinished:
        fail(f"{resume_path(earlier)} holds an unfinished run ({where}) that this new run would "
             f"replace: go on with it ({resume_command(earlier, 1)}), move it away, or add "
             "--discard_unfinished to let it go")  # fmt: skip
    if where := unfinished_run(resume_path(hp.model_file)):
        print(f"{resume_path(hp.model_file)} holds an unfinished run ({where}); this run keeps it "
              f"as {resume_path(earlier)}.\n  To go on with that run later: "
              f"{resume_command(earlier, 1)}")  # fmt: skip


def unfinished_run(path: str) -> str:
    """'step N of M' if path holds the state of a run that has not ended, else ''."""
    try:  # (mmap: only the few numbers read come off the disk)
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        step, total = state["step"], state["hyperparameters"]["max_iters"]
        if state["finished"]:
            return ""
    except Exception:  # no such file, or nothing --resume could go on with
        return ""
    return f"step {step:,}" + (f" of {total:,}" if total != UNFITTED else "")


def keep_earlier_run(model_file: str) -> None:
    """Before a new run writes its first file, the earlier run's files get a second name, *.prev
    (replacing the run before that), so that one earlier run is always kept. A second name
    costs no space, and each file stays where it is until the new run replaces it. All or
    nothing: every second name is made under a temporary name first, and only once all of them
    are made and every *.prev may be replaced do they replace it; else the kept run stays whole."""
    staged = []
    try:
        for path in filter(os.path.exists, run_files(model_file)):
            earlier = earlier_name(path)
            taken = os.path.exists(earlier) and not os.access(earlier, os.W_OK)
            if os.path.isdir(earlier) or taken:
                raise PermissionError(errno.EACCES, "it cannot be replaced", earlier)
            folder, name = os.path.split(earlier)  # a temporary name as replacing() makes them
            mark = f"{os.getpid()}.{TEMP_MARK}{os.urandom(4).hex()}"
            tmp = os.path.join(folder, f".{name}.{mark}.tmp")
            staged.append((tmp, earlier))
            try:
                os.link(path, tmp)
            except OSError:  # a file system without hard links (or path is not a file)
                shutil.copyfile(path, tmp)
        for tmp, earlier in staged:
            replace(tmp, earlier)
    except OSError as e:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        where = e.filename or model_file
        fail(f"cannot keep the earlier run's {where!r} ({e.strerror or e}): move it away "
             "yourself, or pick another --model_file; nothing was changed")  # fmt: skip


def save_checkpoint(path: str, checkpoint: dict) -> None:
    with replacing(path, "free some space, or pick another --model_file") as f:
        torch.save({**checkpoint, "format": FORMAT}, f)


def load_checkpoint(path: str, device: str) -> dict:
    if not os.path.exists(path):
        fail(f"no checkpoint at {path!r}: train one first with `python gpt.py`")
    if not os.path.isfile(path):  # a folder, or a pipe that would never end
        fail(f"{path!r} is not a file: name a checkpoint that gpt.py saved")
    damaged = (f"{path!r} is damaged or not a PyTorch checkpoint (a crash mid-copy?): train again "
               "or use another")  # fmt: skip
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        fail(damaged)
    try:
        # weights_only: tensors and plain data only, so loading a file can never run its code
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        fail(f"refused to load {path!r}: it holds Python objects that could run code; "
             "use only checkpoints you trust")  # fmt: skip
    except Exception:
        fail(damaged)
    if (
        not isinstance(checkpoint, dict)
        or not {"model", "config", "tokenizer"} <= checkpoint.keys()
    ):
        fail(f"{path!r} is a PyTorch file but not a gpt.py checkpoint (no model config or "
             "tokenizer in it)")  # fmt: skip
    if (found := checkpoint.get("format", 1)) != FORMAT:  # files from before formats: 1
        fail(f"{path!r} was saved by another version of gpt.py (checkpoint format {found}; "
             f"this one reads {FORMAT}): train it again")  # fmt: skip
    fields = {**MODEL_FILE, **(RESUME_FILE if "optimizer" in checkpoint else {})}
    for name, kind in fields.items():
        if not isinstance(checkpoint.get(name), kind):
            fail(f"{path!r} is damaged: its {name!r} is missing or not a {kind.__name__}; "
                 "train again or use another")  # fmt: skip
    tokenizer = checkpoint["tokenizer"]
    if tokenizer.get("kind") not in ("char", "gpt2") or not isinstance(
        tokenizer.get("chars", ""), str
    ):
        fail(f"{path!r} is damaged: its tokenizer is {tokenizer!r}; train again or use another")
    check_saved_model(checkpoint, path)
    return checkpoint


def check_saved_model(checkpoint: dict, path: str) -> None:
    """The model a checkpoint describes: a shape the command line would accept, a vocabulary its
    tokenizer fills exactly, and weights that are all numbers."""
    config, tokenizer = checkpoint["config"], checkpoint["tokenizer"]
    shape = {k: v for k, v in config.items() if k in MODEL_SHAPE or k == "dropout"}
    saved_settings({**shape, "tokenizer": tokenizer["kind"]}, path)
    chars = tokenizer.get("chars", "")
    tokens = len(set(chars)) if tokenizer["kind"] == "char" else GPT2_VOCABULARY
    vocabulary = config.get("vocab_size")
    fits = vocabulary == tokens == len(chars) or (
        tokenizer["kind"] == "gpt2" and type(vocabulary) is int and vocabulary >= tokens
    )
    if not fits:
        fail(f"{path!r} is damaged: its model reads {vocabulary} tokens but its "
             f"{tokenizer['kind']} tokenizer has {tokens}; train again or use another")  # fmt: skip
    for name, weights in checkpoint["model"].items():
        if isinstance(weights, torch.Tensor) and not weights.isfinite().all():
            fail(f"{path!r} holds weights that are not numbers (NaN or infinity, in {name}): the "
                 "run that saved them went wrong; train again or use another")  # fmt: skip


GPT2_VOCABULARY = 50257  # tokens in GPT-2's tokenizer; a model may read more (rounded up)
GPT2_END = 50256  # <|endoftext|>, its last token: between documents


def load_resume_state(model_file: str) -> dict:
    path = resume_path(model_file)
    if not os.path.exists(path):
        fail(f"nothing to resume: no {path!r} here (a run saves it at every evaluation and on "
             "Ctrl-C)")  # fmt: skip
    state = load_checkpoint(path, "cpu")  # random generator states must be CPU tensors
    if "optimizer" not in state:
        fail(f"{path!r} holds a model but no training state to resume: use it with --sample, "
             "or train anew")  # fmt: skip
    return state


class BatchSampler:
    """Where each training window starts, drawn from its own random generator, so that
    evaluating or sampling never changes which batches training sees, and --resume goes on
    with the same ones.

    'random': anywhere, independently each time (simple; a long run sees everything).
    'sliding': every stride-th position plus one window flush with the end, so an epoch covers
    every token, in a new shuffled order each epoch.
    """

    def __init__(self, n_tokens: int, hp: Settings, rank: int = 0, world_size: int = 1) -> None:
        self.n_tokens, self.block_size, self.batch_size = n_tokens, hp.block_size, hp.batch_size
        self.random = hp.batching == "random"
        self.last = n_tokens - hp.block_size - 1  # the last position a whole window can start at
        starts = torch.arange(0, self.last, hp.stride or hp.block_size)
        self.windows = torch.cat([starts, torch.tensor([self.last])])
        self.queue = torch.empty(0, dtype=torch.long)  # starts still to visit in this epoch
        self.generator = torch.Generator().manual_seed(hp.seed)
        self.micro_batches, self.rank, self.world_size = hp.grad_accum_steps, rank, world_size
        self.draws = 0  # steps drawn: a training step has begun once its batches are drawn

    def next_starts(self) -> torch.Tensor:
        if self.random:
            return random_starts(self.n_tokens, self.block_size, self.batch_size, self.generator)
        while len(self.queue) < self.batch_size:  # a new epoch: every window once, in a new order
            order = torch.randperm(len(self.windows), generator=self.generator)
            self.queue = torch.cat([self.queue, self.windows[order]])
        starts, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size :]
        return starts

    def next_step(self) -> list[torch.Tensor]:
        """This process's micro-batches of one step. Every process draws all of them and takes
        its share (rank, rank + world_size, ...), so a step sees the same batches however many
        processes run."""
        self.draws += 1
        starts = [self.next_starts() for _ in range(self.micro_batches)]
        return starts[self.rank :: self.world_size]

    def state_dict(self) -> dict:
        return {"rng": self.generator.get_state(), "queue": self.queue}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["rng"])
        self.queue = state["queue"][state["queue"] <= self.last]  # the text may have changed


class Run:
    """One training run's bookkeeping and files, for train() in Part 1: it restores --resume's
    state, logs every evaluation to train_log.csv, keeps the best model in model_file and the
    state to resume from beside it, shows the progress bar, and stops cleanly on Ctrl-C."""

    def __init__(self, hp: Settings, hw: Hardware, start: dict | GPT | None) -> None:
        self.hp, self.hw = hp, hw
        self.state = start if isinstance(start, dict) else None  # --resume
        self.pretrained = start if isinstance(start, GPT) else None  # --init_from
        if self.pretrained:
            use_attention(self.pretrained, hw.attention)
        self.best_val_loss, self.start_step, self.elapsed_before = float("inf"), 0, 0.0
        self.first_val_loss = None  # this session's first evaluation, to tell divergence by
        self.step_seconds, self.first_eval_seconds = [], 0.0  # to say how long the run takes
        self.first_sample_seconds = 0.0
        self.pending = []  # the losses of the steps since the last read (see stepped)
        self.deadline = math.inf  # --minutes: when the run must end (see fit_to_budget)
        self.interrupted = self.writing = False  # (writing: see on_ctrl_c)
        self.progress = None  # the progress bar, once training begins
        self.kept_earlier = self.state is not None  # a new run keeps the earlier run's files
        if hw.master:
            claim_folder(hp.model_file)
        if not self.state:  # say so first, and refuse before anything is loaded
            protect_unfinished_runs(hp)
            if hw.master:
                describe_earlier_model(hp.model_file)

    def load_tokens(self) -> tuple[dict, Tokenizer]:
        """The text's tokens, split by split_tokens into {'train': ..., 'val': ...}, and the
        tokenizer that reads them; a resumed run keeps its vocabulary (characters the text lost
        since are fine; new ones are refused)."""
        hp = self.hp
        kind = self.state["tokenizer"]["kind"] if self.state else hp.tokenizer
        tokens, tokenizer = load_tokens(hp.input_file, kind)
        if self.state and self.state["tokenizer"] != tokenizer_info(tokenizer):
            saved = tokenizer_from(self.state)  # map the text's character ids to the saved ones
            check_readable(saved, tokenizer.chars)
            tokens = np.array(saved.encode(tokenizer.chars), dtype=np.uint16)[tokens]
            tokenizer = saved
        train_data, val_data = split_long_enough(tokens, hp.block_size)
        check_readable(tokenizer, hp.prompt)  # say so now, not at the first sample
        vocabulary = f"{tokenizer.vocab_size:,}-token {tokenizer_info(tokenizer)['kind']}"
        print(f"data: {len(tokens):,} tokens of {hp.input_file} ({vocabulary} vocabulary);\n"
              f"  training on the first {len(train_data):,}, validating on the last "
              f"{len(val_data):,}")  # fmt: skip
        self.tokenizer, self.n_train = tokenizer, len(train_data)
        self.memory = check_memory(hp, tokenizer.vocab_size, self.hw)  # before allocating
        return {"train": train_data, "val": val_data}, tokenizer

    def start(self, model: GPT, averaged: GPT, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler) -> BatchSampler:  # fmt: skip
        """Take note of what the run trains; restore --resume's state into it; open the log."""
        hp, hw = self.hp, self.hw
        self.model, self.averaged, self.optimizer, self.scaler = model, averaged, optimizer, scaler
        self.sampler = BatchSampler(self.n_train, hp, hw.rank, hw.world_size)
        self.tokens_per_step = hp.batch_size * hp.block_size * hp.grad_accum_steps
        if self.sampler.random:
            steps = self.n_train / self.tokens_per_step
            print(f"one epoch (as many tokens as the training split) = {steps:,.1f} steps")
        else:
            windows = len(self.sampler.windows)
            steps = windows / (hp.batch_size * hp.grad_accum_steps)
            print(f"one epoch = {windows:,} sliding windows, {hp.stride or hp.block_size} apart = "
                  f"{steps:,.1f} steps")  # fmt: skip
        if self.state:
            self.restore(self.state)
        else:
            say_what_settings_miss(hp, epochs=hp.max_iters / steps)
        self.step, self.draws_at_yield = self.start_step, 0  # (see steps and on_ctrl_c)
        signal.signal(signal.SIGINT, self.on_ctrl_c)
        if hp.max_iters == UNFITTED:
            self.plan_budget(model)
        c = model.config
        shape = f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}"
        print(f"model: {model.num_params():,} parameters ({shape})")
        print(f"  {c.attention} attention; {self.memory}")
        self.log_file, self.log_rows = None, kept_log_rows(hp.model_file, self.state)
        clean_stale_temps(os.path.dirname(hp.model_file))
        # perf_counter is the clock for intervals (time() may move in 16 ms ticks, on Windows)
        self.start_time = self.window_start = time.perf_counter()
        # a bar redrawn in place on a terminal; piped to a file, a plain line now and then
        on_terminal = sys.stderr.isatty()
        self.plain_every = 0 if on_terminal or not hw.master else max(1, hp.eval_interval // 5)
        self.progress = tqdm(total=hp.max_iters, initial=self.start_step, mininterval=1.0,
                             disable=not (hw.master and on_terminal), bar_format=BAR)  # fmt: skip
        return self.sampler

    def restore(self, state: dict) -> None:
        """Put a saved run back exactly where it stopped, random number generators included."""
        try:
            self.restore_parts(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # loads, but does not fit
            path = resume_path(self.hp.model_file)
            fail(f"{path!r} is damaged: its state does not fit the model it describes "
                 f"({type(e).__name__}); train anew")  # fmt: skip
        best = self.best_val_loss  # (inf until an evaluation after step 0)
        so_far = f"best val loss so far {best:.4f}" if best < math.inf else "no model saved yet"
        print(f"resuming at step {self.start_step} ({so_far})")

    def restore_parts(self, state: dict) -> None:
        hp, hw = self.hp, self.hw
        if self.averaged is not self.model:  # (with ema_decay=0 there is no separate average)
            self.averaged.load_state_dict(state["model"])
        self.model.load_state_dict(state["trained_model"])
        # the command line may have changed betas or weight decay (AdamW's groups are
        # make_optimizer's: matrices, then vectors), and fused must suit this device
        saved = state["optimizer"]
        for group, decay in zip(saved.get("adamw", saved)["param_groups"], (hp.weight_decay, 0.0)):
            group.update(betas=(hp.beta1, hp.beta2), weight_decay=decay, fused=hw.fused_adamw)
        for group in saved["muon"]["param_groups"] if "muon" in saved else []:
            group.update(weight_decay=hp.weight_decay)
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # fp16 only: the loss scale it had found
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and hw.device_type == "cuda":  # every process's generator is the same
            torch.cuda.set_rng_state(state["cuda_rng"][0], hw.device)
        self.sampler.load_state_dict(state["sampler"])
        self.start_step, self.best_val_loss = state["step"], state["best_val_loss"]
        self.elapsed_before = state["elapsed_s"]

    def on_ctrl_c(self, signum: int, frame: object) -> None:
        """Ctrl-C: save the state of the last whole step and stop. An evaluation or sample in
        progress is abandoned (nothing of it is in that state); a training step in progress is
        finished first, so that the state is whole. A second Ctrl-C stops at once."""
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # between the step's yield and its batches: evaluating or sampling. Under torchrun every
        # process must stop at the same step, agreed at the next one (see steps)
        pausing = self.sampler.draws == self.draws_at_yield and not self.writing
        if pausing and self.hw.world_size == 1:
            raise Interrupted(functools.partial(self.stop, self.step))
        tqdm.write(f"Ctrl-C: finishing step {self.step}, then saving it and stopping (Ctrl-C "
                   "again stops at once, saving nothing more)")  # fmt: skip

    def stop(self, step: int) -> NoReturn:
        """After Ctrl-C: save the state before step (all steps up to it are trained), say how to go
        on, and end the program as Ctrl-C does."""
        if self.progress:
            self.progress.close()
        go_on = f"to continue: {resume_command(self.hp.model_file, self.hw.world_size)}"
        if step > self.start_step:
            self.read_losses(step - 1)
            self.save_state(step)
            print(f"interrupted at step {step}; saved {resume_path(self.hp.model_file)}\n{go_on}")
        elif self.state:
            print(f"interrupted at step {step}, where this run resumed: nothing trained since, "
                  f"{resume_path(self.hp.model_file)} is as it was\n{go_on}")  # fmt: skip
        else:
            print(f"interrupted at step {step}, before any training: nothing saved")
        raise SystemExit(130)  # the exit code of a program stopped by Ctrl-C

    def steps(self) -> Iterator[int]:
        """start_step, ..., max_iters; after a Ctrl-C, save the state and stop instead."""
        step = self.start_step
        while step <= self.hp.max_iters:  # (--minutes sets max_iters once steps are measured)
            late = self.deadline < math.inf and process_seconds() > self.deadline  # --minutes
            if late and step < self.hp.max_iters:
                why = ("the steps took longer than the first ones" if self.hp.eval_interval !=
                       UNFITTED else "before the first steps were all timed")  # fmt: skip
                tqdm.write(f"the {self.hp.minutes:g}-minute budget is spent: step {step} is the "
                           f"last ({why})")  # fmt: skip
                self.hp.max_iters = step  # this step evaluates and saves, and the run ends
                self.read_losses(step - 1)  # the steps a GPU may still be running
            # under torchrun all processes ask each other (a wait for GPUs) every READ_EVERY steps
            ask = self.hw.world_size == 1 or self.hw.device_type == "cpu" or step % READ_EVERY == 0
            if ask and anyone(self.interrupted, self.hw):
                self.stop(step)
            self.step, self.draws_at_yield = step, self.sampler.draws  # (see on_ctrl_c)
            yield step
            step += 1

    def checkpoint(self, step: int) -> dict:
        """What --sample needs: the weights and everything that says how to read them."""
        return {"model": self.averaged.state_dict(), "tokenizer": tokenizer_info(self.tokenizer),
                "config": dataclasses.asdict(self.model.config), "step": step,
                "best_val_loss": self.best_val_loss,
                "hyperparameters": dataclasses.asdict(self.hp)}  # fmt: skip

    def save_state(self, step: int, finished: bool = False) -> None:
        """Everything --resume needs to go on as if the run had never stopped."""
        if not self.hw.master:
            return
        hw = self.hw
        self.keep_earlier_run()
        save_checkpoint(resume_path(self.hp.model_file), {
            **self.checkpoint(step), "trained_model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "sampler": self.sampler.state_dict(),
            "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": [torch.cuda.get_rng_state(hw.device)] if hw.device_type == "cuda" else [],
            "elapsed_s": self.elapsed_before + time.perf_counter() - self.start_time,
            "finished": finished,  # evaluated its last step: --resume has nothing left to do
        })  # fmt: skip
        self.flush_log()  # once the state is saved, the log that goes with it

    def keep_earlier_run(self) -> None:
        """Called before each write: the first one keeps the earlier run's files as *.prev."""
        if not self.kept_earlier:
            keep_earlier_run(self.hp.model_file)
            self.kept_earlier = True

    def evaluated(self, step: int, lr: float, losses: dict) -> None:
        """Log the losses; keep the model if its val loss is the best yet. Under torchrun every
        process's losses["val"] becomes rank 0's."""
        self.writing = True  # a Ctrl-C now waits until the files are written
        self.record(step, lr, losses)
        self.writing = False
        if self.interrupted and self.hw.world_size == 1:
            raise Interrupted(functools.partial(self.stop, step))

    def record(self, step: int, lr: float, losses: dict) -> None:
        hp = self.hp
        if self.first_val_loss is None:  # this session's first evaluation, the first thing it did
            self.first_eval_seconds = time.perf_counter() - self.start_time
        losses["val"] = agree_on(losses["val"], self.hw)
        # diverged: a val loss (or nan) well above both guessing uniformly and where this session
        # began (a fresh model can start above uniform); caught before anything is saved
        uniform = math.log(self.model.config.vocab_size)
        if self.first_val_loss is None:
            self.first_val_loss = losses["val"]
        if not losses["val"] <= max(uniform, self.first_val_loss) + 1:
            fail(f"the val loss is {losses['val']:.4g} at step {step}, more than 1 above both its "
                 f"first evaluation ({self.first_val_loss:.2f}) and guessing uniformly "
                 f"({uniform:.2f}): the run diverged; try a lower --learning_rate. Nothing was "
                 "saved after it went bad")  # fmt: skip
        # model_file keeps the best model, lean: no optimizer state. Step 0 is left out (it has not
        # trained, and saving it would replace an earlier run's model) unless the run ends there
        reached = losses["val"] <= hp.target_loss
        if losses["val"] < self.best_val_loss and (step > 0 or step == hp.max_iters or reached):
            self.best_val_loss = losses["val"]
            if self.hw.master:
                self.keep_earlier_run()
                save_checkpoint(hp.model_file, self.checkpoint(step))
        if step > 0:  # (at step 0 there is nothing to resume, and an earlier run's file would go)
            # (finished: at its last step, or its target; resumed, it evaluates that step again)
            self.save_state(step, finished=step == hp.max_iters or reached)
        tokens = step * self.tokens_per_step
        elapsed = self.elapsed_before + time.perf_counter() - self.start_time
        self.write_log({"step": step, "tokens": tokens, "epoch": f"{tokens / self.n_train:.3f}",
                        "elapsed_s": f"{elapsed:.1f}", "train_loss": f"{losses['train']:.4f}",
                        "val_loss": f"{losses['val']:.4f}", "lr": f"{lr:.3e}"})  # fmt: skip
        tqdm.write(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        if reached:
            tqdm.write(
                f"reached the target val loss {hp.target_loss} at step {step}: stopping early"
            )
        self.window_start = time.perf_counter()  # the steps' clock leaves evaluations out

    def write_log(self, row: dict) -> None:
        """Add a row to train_log.csv, once the run has saved something (it saves nothing at
        step 0): a run that fails before then leaves the earlier run's log as it was."""
        self.log_rows.append(row)
        if row["step"] > 0 or self.log_file:
            self.flush_log()

    def flush_log(self) -> None:
        """Write the rows waiting. The run's first write replaces the file, with the rows a
        resumed run keeps; later ones append."""
        if not self.hw.master or not self.log_rows:
            return
        self.keep_earlier_run()
        path = log_path(self.hp.model_file)
        advice = "pick another --model_file; the log goes beside it"
        try:
            if self.log_file is None:
                with replacing(path, advice) as f:
                    f.write(csv_text(self.log_rows, header=True).encode())
                self.log_file = open(path, "a", newline="")
            else:
                self.log_file.write(csv_text(self.log_rows))
                self.log_file.flush()
        except OSError as e:
            fail(f"cannot write {path!r} ({e.strerror}): {held_open_advice(e, path)}{advice}")
        self.log_rows = []

    def print_sample(self, model: GPT, tokenizer: Tokenizer) -> None:
        """A short sample from the same prompt and seed each time. It uses its own random
        generator and no dropout, so training goes on exactly as it would without it."""
        if not self.hw.master:
            return
        hp, started = self.hp, time.perf_counter()
        with self.hw.autocast:
            pieces = generate_text(model, tokenizer, hp.prompt, 1, hp.sample_tokens, hp.seed,
                                   **sampling_options(hp))  # fmt: skip
            text = "".join(piece for [piece] in pieces)  # one sample: each yield is a list of one
        tqdm.write("  | " + text.strip("\n").replace("\n", "\n  | "))
        say_if_unshown(text)
        self.first_sample_seconds = self.first_sample_seconds or time.perf_counter() - started
        self.window_start = time.perf_counter()  # and samples
        model.train()  # generate_text switched to eval mode

    def stepped(self, step: int, loss: torch.Tensor, lr: float) -> None:
        """After each step: the progress bar, tokens/s, the time estimate (--minutes: the fit),
        and a loss that is not finite stops the run. Reading a loss waits for the device to finish
        its step; a CPU has finished anyway, but a GPU runs ahead while the next batch is made, so
        there the losses are read every READ_EVERY steps and before each pause (Part 1's
        evaluations and samples), and the time of those steps is shared among them."""
        self.pending.append(loss.detach())
        self.lr, hp, after = lr, self.hp, step + 1
        pauses = (
            after % hp.eval_interval == 0
            or after == hp.max_iters
            or (hp.sample_interval and after % hp.sample_interval == 0)
        )  # Part 1 evaluates or samples before the next step
        measured = len(self.step_seconds) + len(self.pending) == self.steps_to_measure()
        # the same steps in every process under torchrun: each read asks all of them (anyone)
        if (
            self.hw.device_type == "cpu"
            or pauses
            or measured
            or step == self.start_step
            or after % READ_EVERY == 0
        ):
            self.read_losses(step)

    def steps_to_measure(self) -> int:
        """How many steps' times say how long the run takes (--minutes: the steps to fit by)."""
        fitting = self.hp.minutes and self.hp.max_iters == UNFITTED
        return min(FIT_STEPS, self.hp.warmup_iters) if fitting else 10

    def read_losses(self, step: int) -> None:
        """The losses of the steps up to step: checked, shown, and their time measured."""
        if not self.pending:
            return
        losses = torch.stack(self.pending).tolist()  # waits for the device
        now = time.perf_counter()
        seconds, count = (now - self.window_start) / len(losses), len(losses)
        self.pending, self.window_start = [], now
        bad = [(x, step + 1 - count + i) for i, x in enumerate(losses, 1) if not math.isfinite(x)]
        if anyone(bool(bad), self.hw):  # every process stops, not only the one that saw it
            loss, at = bad[0] if bad else ("not finite in another process", step + 1)
            fail(f"the loss became {loss} at step {at}: the run diverged; try a lower "
                 "--learning_rate. Nothing was saved after it went bad")  # fmt: skip
        speed = f", {self.tokens_per_step / seconds:,.0f} tok/s" if seconds > 0 else ""
        line = f"loss {losses[-1]:.4f}, lr {self.lr:.1e}{speed}"
        self.progress.set_postfix_str(line, refresh=False)
        self.progress.update(count)
        every = self.plain_every  # (the steps read may have passed its multiple)
        if every and (step + 1) // every > (step + 1 - count) // every:
            print(f"step {step + 1}/{self.hp.max_iters}: {line}", flush=True)
        # once the first steps are measured, say how long the run takes (--minutes: fit it, once
        # they are all measured, or once measuring has taken its share of the budget)
        fitting = self.hp.minutes and self.hp.max_iters == UNFITTED
        measure = self.steps_to_measure()
        if len(self.step_seconds) < measure:
            self.step_seconds += [seconds] * min(count, measure - len(self.step_seconds))
            spent = sum(self.step_seconds) > MEASURING_SHARE * self.hp.minutes * 60
            if fitting and len(self.step_seconds) >= 4 and spent:
                self.step_seconds += [seconds] * (measure - len(self.step_seconds))
            if len(self.step_seconds) == measure:
                if fitting:
                    self.fit_to_budget(step)
                self.say_how_long(step)

    def plan_budget(self, model: GPT) -> None:
        """--minutes, before step 0: the budget counts from the process's first second. An
        evaluation's cost, from one timed forward pass, may shorten evaluations; a budget that
        buys too few steps says so (USEFUL_STEPS); and the run ends by the deadline whatever the
        steps measured later say."""
        hp, budget = self.hp, self.hp.minutes * 60
        forward = self.time_a_forward(model)
        if (fits := int(EVALUATING_SHARE * budget / (11 * 2 * forward))) < hp.eval_iters:
            tqdm.write(f"--minutes={hp.minutes:g}: each evaluation reads {max(1, fits)} batches "
                       f"of each split, not {hp.eval_iters}, to leave time to train")  # fmt: skip
            hp.eval_iters = max(1, fits)
        evaluation = 2 * hp.eval_iters * forward
        step = 3 * forward * hp.grad_accum_steps  # a backward pass costs about two forward ones
        steps = int((0.95 * budget - process_seconds() - 11 * evaluation - 3) / step)
        need = (USEFUL_STEPS * step + 11 * evaluation + process_seconds() + 3) / 0.95 / 60
        buys = (f"--minutes={hp.minutes:g} buys about {max(0, steps)} training steps here (a step "
                f"takes about {step:.2g} s on this machine)")  # fmt: skip
        if steps < USEFUL_STEPS // 10:
            fail(f"{buys}, too few to train: give --minutes={math.ceil(need)} or more, or a "
                 "smaller model")  # fmt: skip
        if steps < USEFUL_STEPS:
            tqdm.write(f"note: {buys}, too few to learn much; --minutes={math.ceil(need)} buys "
                       f"{USEFUL_STEPS}")  # fmt: skip
        self.deadline = budget - evaluation - 1
        tqdm.write(f"--minutes={hp.minutes:g}: evaluating step 0, then timing the first steps "
                   "to fit the run to the budget")  # fmt: skip

    def time_a_forward(self, model: GPT) -> float:
        """Seconds of one forward pass over a batch, as an evaluation makes them."""
        x = torch.zeros(self.hp.batch_size, self.hp.block_size, dtype=torch.long,
                        device=self.hw.device)  # fmt: skip
        model.eval()
        times = []
        with torch.no_grad(), self.hw.autocast:
            for _ in range(3):  # the least of three: the first may set things up
                started = time.perf_counter()
                model(x, x)[1].item()  # (item: waits for a GPU)
                times.append(time.perf_counter() - started)
        model.train()
        return max(min(times), 1e-6)

    def fit_to_budget(self, step: int) -> None:
        """--minutes: the steps that fit what is left of the budget, at the median time of the
        later half of the first FIT_STEPS, with ten evaluations (and samples) at the first one's
        cost, and the final samples. The steps so far were warm-up, which max_iters does not
        change: the printed flags run the same run again (unless the steps slow down so much
        that the deadline ends the run early, which it says)."""
        hp = self.hp
        settled = statistics.median(self.step_seconds[len(self.step_seconds) // 2 :])
        per_step = max(settled, 1e-6)  # (a clock too coarse to see a step)
        evaluation = self.first_eval_seconds + self.first_sample_seconds
        final = self.first_sample_seconds * hp.max_new_tokens / max(1, hp.sample_tokens)
        # past it the run ends, evaluating where it is
        self.deadline = hp.minutes * 60 - evaluation - final - 1
        left = 0.95 * hp.minutes * 60 - process_seconds() - 11 * evaluation - final - 3
        hp.max_iters = max(step + 1, step + 1 + int(left / per_step))
        # (not before this step: the same steps, run again with these flags, must not either)
        hp.eval_interval = hp.sample_interval = max(step + 1, -(-hp.max_iters // 10))
        self.progress.total = hp.max_iters
        self.plain_every = self.plain_every and max(1, hp.eval_interval // 5)
        # the budget's shape and steps, and every other knob this run set
        always = (*MODEL_SHAPE[1:5], "batch_size", *FITTED)
        knobs = {f.name: getattr(hp, f.name) for f in dataclasses.fields(Hyperparameters)}
        flags = " ".join(quote(f"--{name}={value}") for name, value in knobs.items()
                         if name in always or value != getattr(Hyperparameters, name))  # fmt: skip
        minutes = f"{hp.minutes:g} minute" + ("" if hp.minutes == 1 else "s")
        again = f"{python_command()} {quote(sys.argv[0])} {flags}"
        tqdm.write(f"fitted to {minutes}: {hp.max_iters:,} steps at {per_step:.3g} s; the same "
                   f"run again:\n  {again}")  # fmt: skip

    def say_how_long(self, step: int) -> None:
        """What the rest of the run will take, from the median of its first steps (the first one,
        which sets things up, is left out), and its evaluations at the first one's cost."""
        hp, per_step = self.hp, statistics.median(self.step_seconds[1:])
        steps_left = hp.max_iters - step - 1
        evaluations = steps_left // hp.eval_interval + 1
        seconds = steps_left * per_step + evaluations * self.first_eval_seconds
        each = self.first_eval_seconds  # (none yet in a run resumed between evaluations)
        timed = f"at {each:.2g} s" if 0 < each < 10 else f"at {each:.0f} s" if each else "to come"
        said = (f"about {duration(seconds)} more: {steps_left:,} steps at {per_step:.3g} s and "
                f"{evaluations} evaluation{'s' * (evaluations != 1)} {timed}")  # fmt: skip
        if seconds > SLOW_RUN * 60 and all(getattr(hp, k) == v for k, v in DEFAULT_RUN.items()):
            said += (f"\n(this machine takes {duration(seconds)} for the default run, made to take "
                     "about five minutes; for the best run five minutes buy here: "
                     f"{python_command()} {quote(sys.argv[0])} --minutes=5)")  # fmt: skip
        tqdm.write(said)

    def finish(self, model: GPT) -> GPT:
        """Close the files, draw the plot, and return model holding the best weights saved.
        Under torchrun, the other processes end here."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.progress.close()
        if self.log_file:
            self.log_file.close()
        if self.hw.world_size > 1:  # leave together: gloo can crash on a process exiting early
            dist.barrier()
        if not self.hw.master:
            raise SystemExit(0)
        self.flush_log()  # a run that ended at step 0 has its one row still waiting
        hp = self.hp
        session = time.perf_counter() - self.start_time
        also = f" ({self.elapsed_before + session:.0f} s in all)" if self.elapsed_before else ""
        print(f"done in {session:.0f} s{also}; best val loss {self.best_val_loss:.4f}, saved to "
              f"{hp.model_file}")  # fmt: skip
        plot_losses(log_path(hp.model_file))
        model.load_state_dict(load_checkpoint(hp.model_file, self.hw.device)["model"])
        return model


def say_what_settings_miss(hp: Settings, epochs: float) -> None:
    """Settings that do less than they seem to: one line each, and the run goes on."""
    if hp.max_iters == UNFITTED:  # --minutes: its fit decides the steps
        return
    if hp.max_iters < hp.warmup_iters:
        print(f"note: --max_iters={hp.max_iters} ends inside the warm-up (--warmup_iters="
              f"{hp.warmup_iters}): the learning rate only rises and never decays; for a short "
              f"run, lower --warmup_iters too")  # fmt: skip
    if epochs > MANY_EPOCHS:
        print(f"note: this run reads its training text {epochs:.0f} times over: the model will "
              "learn it by heart (train loss falls while val loss rises); give it a longer "
              "text, or fewer --max_iters")  # fmt: skip


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} minutes"


def process_seconds() -> float:
    """How long this process has run: since it started on Linux, elsewhere since Part 2 was read."""
    try:
        with open("/proc/self/stat") as f:  # field 22, after the name in brackets: its start
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - WORKSHOP_READ


WORKSHOP_READ = time.time()
READ_EVERY = 10  # steps a GPU runs ahead between reads of the loss (see Run.stepped)
MANY_EPOCHS = 20  # passes over the training text past which a run warns of memorising it
SLOW_RUN = 15  # minutes: a default run estimated past this suggests --minutes=5 instead
# the knobs that make the default run what it is on a CPU (its steps, shape and evaluations)
DEFAULT_RUN = {name: getattr(Settings, name) for name in (
    "max_iters", "n_layer", "n_embd", "block_size", "batch_size", "grad_accum_steps",
    "eval_interval", "eval_iters", "minutes")}  # fmt: skip
BAR = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {elapsed}<{remaining}{postfix}"
LOG_COLUMNS = ["step", "tokens", "epoch", "elapsed_s", "train_loss", "val_loss", "lr"]


def kept_log_rows(model_file: str, state: dict | None) -> list[dict]:
    """train_log.csv has a row per evaluation; a resumed run keeps those before its step."""
    path = log_path(model_file)
    if not state or not os.path.exists(path):
        return []
    kept = []
    try:
        if not os.path.isfile(path):  # (a pipe would never end)
            raise IsADirectoryError(errno.EISDIR, "not a file")
        with open(path, newline="") as f:
            for row in (rows := csv.DictReader(f)):
                if int(row["step"]) < state["step"]:
                    kept.append(row)
                    for column in LOG_COLUMNS:
                        float(row[column])  # raises unless every column holds a number
    except (KeyError, TypeError, ValueError):
        fail(f"the log {path!r} is damaged at line {rows.line_num}: mend or delete that line and "
             "resume again (the model and the resume state are untouched)")  # fmt: skip
    except (OSError, csv.Error):
        fail(f"cannot read the log {path!r} to go on with it: move it away and resume again")
    return kept


def csv_text(rows: list[dict], header: bool = False) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, LOG_COLUMNS)
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


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
    epochs_seen = float(rows[-1]["epoch"])
    tokens_per_epoch = tokens[-1] / epochs_seen if epochs_seen > 0 else 1.0
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tokens, [float(r["train_loss"]) for r in rows], label="train")
    ax.plot(tokens, [float(r["val_loss"]) for r in rows], label="val")
    ax.set_xlabel("tokens seen")
    to_epochs = (lambda t: t / tokens_per_epoch, lambda e: e * tokens_per_epoch)
    ax.secondary_xaxis("top", functions=to_epochs).set_xlabel(
        "epochs (passes over the training tokens)"
    )
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    ax.grid(alpha=0.3)
    png = os.path.join(os.path.dirname(log_path), "loss.png")
    with replacing(png, "free some space; the model is saved") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    print(f"loss plot: {png}")


# -----------------------------------------------------------------------------
# Tokenizers from settings and files, and texts of any size. The idea is one line,
# tokens = tokenizer.encode(open(path).read()); this does it in 4 MB pieces and keeps the tokens
# in a file beside the text, so a text larger than memory trains and a second start is instant.


def make_tokenizer(kind: str, text: str = "", chars: str = "") -> Tokenizer:
    if kind == "char":
        return CharTokenizer(chars or "".join(sorted(set(text))))
    if kind != "gpt2":
        fail(f"--tokenizer must be one of char, gpt2, not {kind!r}")
    try:
        return GPT2Tokenizer()
    except Exception as e:  # tiktoken downloads its files once; offline that fails
        fail(f"cannot load GPT-2's tokenizer files ({type(e).__name__}): connect to the internet "
             "once, or set TIKTOKEN_CACHE_DIR to a folder that has them")  # fmt: skip


def tokenizer_info(tokenizer: Tokenizer) -> dict:
    """What a checkpoint or a token cache records of a tokenizer, to make it again."""
    if isinstance(tokenizer, GPT2Tokenizer):
        return {"kind": "gpt2"}
    return {"kind": "char", "chars": tokenizer.chars}


def tokenizer_from(checkpoint: dict) -> Tokenizer:
    info = checkpoint["tokenizer"]
    return make_tokenizer(info["kind"], chars=info.get("chars", ""))


def check_readable(tokenizer: Tokenizer, text: str) -> None:
    """A character vocabulary can only read the characters it was trained on."""
    unknown = (
        sorted(set(text) - tokenizer.stoi.keys()) if isinstance(tokenizer, CharTokenizer) else []
    )
    if unknown:
        fail(f"the text has characters this model's vocabulary lacks: {''.join(unknown)!r}")


def split_long_enough(tokens: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """split_tokens, for a text whose validation split holds at least one whole window."""
    train_data, val_data = split_tokens(tokens)
    if len(val_data) < block_size + 1:
        fail(f"the text is {len(tokens):,} tokens, too short for block_size={block_size}: the "
             f"10% validation split needs at least {block_size + 1}; use more text or a smaller "
             "--block_size")  # fmt: skip
    return train_data, val_data


def open_text(path: str) -> BinaryIO:
    if os.path.exists(path) and not os.path.isfile(path):  # a folder, or a pipe (read twice)
        fail(f"{path!r} is not a file: put your training text in a file and pass --input_file=PATH")
    try:
        return open(path, "rb")
    except OSError as e:
        fail(f"cannot read {path!r} ({e.strerror}): put your training text there or pass "
             "--input_file=PATH")  # fmt: skip


def read_pieces(path: str, piece_bytes: int = 1 << 22) -> Iterator[str]:
    """A text file's text, about 4 MB at a time, so a text larger than memory can be tokenized.

    Line breaks are read as Python's open() reads them: Windows' "\r\n" (what git on Windows
    may give input.txt) and old Macs' "\r" become "\n", so a text means the same everywhere.
    Each piece ends just before a line break that follows a non-space character. GPT-2's
    tokenizer never joins characters across such a place, so the pieces encode to the same tokens
    as the whole.
    """
    file = open_text(path)
    utf8 = codecs.getincrementaldecoder("utf-8")()
    decoder = io.IncrementalNewlineDecoder(utf8, translate=True)  # as open()'s text mode
    rest, bytes_before, lines_before = "", 0, 0
    with file:
        while True:
            raw = file.read(piece_bytes)
            cut_char = decoder.getstate()[0]  # the first bytes of a character the last read cut
            try:
                text = rest + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:  # e.start counts from cut_char's first byte
                byte = bytes_before - len(cut_char) + e.start
                line = lines_before + (cut_char + raw)[: e.start].count(b"\n") + 1
                fail(f"{path!r} is not UTF-8 text (byte {byte}, line {line}): save it as UTF-8 "
                     "and try again")  # fmt: skip
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


def encode_batch(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    if isinstance(tokenizer, GPT2Tokenizer):
        return tokenizer.enc.encode_ordinary_batch(texts, num_threads=len(texts))  # in parallel
    return [tokenizer.encode(text) for text in texts]


def read_text(path: str) -> str:
    text = "".join(read_pieces(path))
    if not text.strip():
        fail(f"{path!r} is empty: put some text in it")
    return text


def load_tokens(path: str, kind: str) -> tuple[np.ndarray, Tokenizer]:
    """Every token of the text, as an array of uint16 mapped from a file beside it.

    The text is tokenized once: input.txt's tokens go to input.txt.char.tokens (or .gpt2.tokens),
    reused for as long as the text keeps its size, time and sampled content. The array is
    memory-mapped: the system reads only the pages the batches touch.
    """
    make_tokenizer(kind)  # an unknown kind fails here, before any work
    with open_text(path) as f:
        stat = os.fstat(f.fileno())
        text_id = {
            "text_bytes": stat.st_size,
            "text_mtime_ns": stat.st_mtime_ns,
            "text_sample": sample_digest(f, stat.st_size),  # a text swapped for one as long
            "line_breaks": "\\n",
        }  # read as read_pieces does: a cache made otherwise is redone
    cache = f"{path}.{kind}.tokens"
    try:
        if not os.path.isfile(cache + ".json"):  # (a pipe would never end)
            raise FileNotFoundError
        with open(cache + ".json") as f:
            info = json.load(f)
        fresh = (
            info["check"] == digest_of(info)  # the description is as it was written
            and {key: info[key] for key in text_id} == text_id
            and os.path.getsize(cache) == 2 * info["tokens"]
        )
    except (OSError, ValueError, KeyError, TypeError):  # no cache yet, or a damaged one
        fresh = False
    if not fresh:
        info = write_token_cache(path, kind, cache, text_id)
    tokenizer = make_tokenizer(kind, chars=info.get("chars", ""))
    return np.memmap(cache, dtype=np.uint16, mode="r"), tokenizer


def sample_digest(file: BinaryIO, size: int, pieces: int = 16) -> str:
    """A digest of 16 pieces of a file, spread over it: cheap at any size, and a text replaced by
    another of the same size and time (a copy, an archive) gives another."""
    digest = hashlib.sha256()
    for i in range(pieces):
        file.seek(size * i // pieces)
        digest.update(file.read(4096))
    return digest.hexdigest()[:16]


def digest_of(info: dict) -> str:
    """What a token cache's description vouches for itself with: any change to it, by hand or by
    a damaged disk, makes the cache be made again (it is only a cache)."""
    text = json.dumps({k: v for k, v in info.items() if k != "check"}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_token_cache(path: str, kind: str, cache: str, text_id: dict) -> dict:
    # a first pass checks the text and finds the characters it uses (the char vocabulary)
    chars = set().union(*map(set, read_pieces(path)))
    if not "".join(chars).strip():
        fail(f"{path!r} is empty: put some text in it")
    if kind == "char" and len(chars) > 2**16:
        fail(f"{path!r} uses {len(chars):,} different characters, more than 65,536: "
             "use --tokenizer=gpt2")  # fmt: skip
    tokenizer = make_tokenizer(kind, chars="".join(sorted(chars)))
    print(f"tokenizing {path} once; its tokens are kept in {cache}")
    n_tokens, pieces = 0, read_pieces(path)
    clean_stale_temps(os.path.dirname(cache))
    advice = "put the text in a folder you can write to, with space to spare"
    with replacing(cache, advice) as f:  # the tokens first, then the description vouching for them
        while batch := list(itertools.islice(pieces, os.cpu_count() or 1)):  # a piece a core
            for ids in encode_batch(tokenizer, batch):
                f.write(np.array(ids, dtype=np.uint16).tobytes())
                n_tokens += len(ids)
    info = {**text_id, "tokens": n_tokens, **tokenizer_info(tokenizer)}
    info["check"] = digest_of(info)
    with replacing(cache + ".json", advice) as f:
        f.write(json.dumps(info).encode())
    return info


# -----------------------------------------------------------------------------
# The loss in chunks: GPT.forward's cross-entropy, without holding every logit at once.


def with_chunked_loss(model: GPT) -> nn.Module:
    """The model to train: with a big vocabulary (GPT-2's), its loss in chunks; else itself."""
    return ChunkedLoss(model) if model.config.vocab_size > CHUNKED_ABOVE else model


CHUNKED_ABOVE = 4096  # a vocabulary bigger than this (GPT-2's) trains with its loss in chunks
CHUNK_LOGITS = 2**24  # logits in a chunk: 64 MB in fp32


class ChunkedLoss(nn.Module):
    """model(idx, targets)'s loss, computed a chunk of tokens at a time (a test checks the loss
    and its gradients against GPT.forward's).

    The logits are big for a big vocabulary: GPT-2's 50,257 at batch 4 x 1024 take 0.8 GB in
    fp32, and the loss and its gradient hold several copies. Here each chunk's logits are dropped
    as soon as its loss is known, and recomputed in the backward pass (activation checkpointing):
    the memory of one chunk, for the price of one more lm_head matmul. Returns (None, loss).
    """

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[None, torch.Tensor]:
        hidden = self.model.hidden(idx).flatten(0, 1)  # (B * T, n_embd)
        targets = targets.reshape(-1)  # (B * T,)
        chunk = max(1, CHUNK_LOGITS // self.model.config.vocab_size)  # tokens a chunk holds
        total = sum(
            # use_reentrant=False: the variant PyTorch recommends, which works with DDP and compile
            torch.utils.checkpoint.checkpoint(
                self.chunk_loss, hidden[i : i + chunk], targets[i : i + chunk], use_reentrant=False
            )
            for i in range(0, len(hidden), chunk)
        )
        return None, total / len(hidden)

    def chunk_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model.lm_head(hidden).float(), targets, reduction="sum")


# -----------------------------------------------------------------------------
# GPT-2 in and out: OpenAI's weights, through Hugging Face transformers (optional).

# transformers stores these as Conv1D layers, whose weights are (in, out): nn.Linear's transposed
CONV1D_WEIGHTS = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")  # transformers' names for GPT-2's tanh GELU


def hf_name(name: str) -> str:
    """Our parameter name -> Hugging Face's: 'blocks.0.ln_1.bias' -> 'transformer.h.0.ln_1.bias'."""
    return name if name == "lm_head.weight" else "transformer." + name.replace("blocks.", "h.")


def import_transformers() -> ModuleType:
    try:
        import transformers
    except ImportError:
        fail("this needs Hugging Face transformers: pip install transformers")
    transformers.logging.set_verbosity_error()  # keep its warnings and progress bars out
    transformers.logging.disable_progress_bar()
    return transformers


def use_attention(model: GPT, attention: str) -> None:
    """Switch the model's attention between 'by_hand' and 'sdpa': the speed, not the math."""
    model.config.attention = attention
    for block in model.blocks:
        block.attn.attention = attention


def from_pretrained(name_or_dir: str, block_size: int = 0, dropout: float = 0.0) -> GPT:
    """GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', or a saved folder) as our GPT.

    block_size, if given and below GPT-2's 1024, keeps only the first block_size position
    embeddings: fine-tuning on a shorter context is much cheaper, and the rest are never used.
    """
    if name_or_dir.startswith((".", os.sep)) and not os.path.isdir(name_or_dir):  # a path
        fail(f"--init_from={name_or_dir}: there is no such folder")
    transformers = import_transformers()
    load = functools.partial(
        transformers.GPT2LMHeadModel.from_pretrained, name_or_dir, output_loading_info=True
    )
    try:
        try:  # a folder, or weights an earlier download left in the cache
            hf, loading = load(local_files_only=True)
        except OSError:
            if os.path.isdir(name_or_dir):
                raise
            check_hub_reachable(name_or_dir)  # at once, not after the hub client's retries
            hf, loading = load()
    except UserError:
        raise
    except Exception as e:  # no such folder, no network, not a GPT-2 checkpoint, ...
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:150]
        fail(f"cannot load GPT-2 weights from {name_or_dir!r} ({reason}). Give a folder holding a "
             "Hugging Face GPT-2 checkpoint (config.json + model.safetensors), or a model name "
             "with internet access once")  # fmt: skip
    c = hf.config
    if c.model_type != "gpt2":
        fail(f"{name_or_dir!r} holds a {c.model_type!r} model, not GPT-2")
    if c.vocab_size < 50257:  # fine-tuning reads the text with GPT-2's tokenizer
        fail(f"{name_or_dir!r} has a {c.vocab_size}-token vocabulary, not GPT-2's 50,257 (a "
             "character model exported with --export_hf?): --init_from needs GPT-2's tokenizer; "
             "to train a gpt.py model on, use --resume")  # fmt: skip
    can_express = {  # the GPT-2 options gpt.py's model implements
        "activation_function": c.activation_function in (*TANH_GELU, "gelu"),
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
    config = GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer,
                       n_head=c.n_head, n_embd=c.n_embd, dropout=dropout, gelu=gelu)  # fmt: skip
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


def check_hub_reachable(name: str) -> None:
    """Weights that are not cached must be downloaded: fail now if the hub cannot be reached."""
    from huggingface_hub import constants

    hub = urllib.parse.urlsplit(constants.ENDPOINT)
    if urllib.request.getproxies() and not constants.HF_HUB_OFFLINE:
        return  # through a proxy: only the download itself can tell
    try:
        if constants.HF_HUB_OFFLINE:
            raise OSError
        port = hub.port or (443 if hub.scheme == "https" else 80)
        socket.create_connection((hub.hostname, port), timeout=5).close()
    except OSError:
        fail(f"--init_from={name}: GPT-2's weights are not in the Hugging Face cache "
             f"({constants.HF_HUB_CACHE}) and {hub.hostname} cannot be reached. Download them "
             f"once where there is internet (hf download {name}) and copy the "
             "cache here, or pass --init_from=FOLDER holding config.json and "
             "model.safetensors")  # fmt: skip


def start_from_gpt2(hp: Settings, overrides: dict) -> tuple[Settings, GPT]:
    """GPT-2's model (--init_from), and the settings with GPT-2's shape and tokenizer in place."""
    pretrained = from_pretrained(hp.init_from, hp.block_size, hp.dropout)
    c = pretrained.config
    # the shape is GPT-2's, except that --block_size may crop its context (see from_pretrained)
    gpt2 = {**dataclasses.asdict(c), "tokenizer": "gpt2"}
    refuse_another_shape(
        gpt2, overrides, f"start from {hp.init_from}", "drop that flag: the shape is GPT-2's"
    )
    print(f"starting from {hp.init_from}, context {c.block_size}")  # the model line says the rest
    return dataclasses.replace(hp, **{name: gpt2[name] for name in MODEL_SHAPE}), pretrained


def export_hf(checkpoint: dict, directory: str) -> None:
    """Write a checkpoint as a folder that transformers' GPT2LMHeadModel.from_pretrained loads."""
    config = GPTConfig(**checkpoint["config"])
    transformers = import_transformers()
    gpt2_vocabulary = config.vocab_size == GPT2_VOCABULARY
    hf_config = transformers.GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, activation_function=TANH_GELU[0] if config.gelu == "tanh" else "gelu",
        bos_token_id=GPT2_END if gpt2_vocabulary else None,
        eos_token_id=GPT2_END if gpt2_vocabulary else None,
    )  # fmt: skip
    hf = transformers.GPT2LMHeadModel(hf_config)
    ours = {
        hf_name(n): (w.t() if n.endswith(CONV1D_WEIGHTS) else w)
        for n, w in checkpoint["model"].items()
    }
    if not config.bias:  # GPT-2 has biases everywhere: a model without is GPT-2 with biases 0
        ours |= {
            name: torch.zeros_like(p) for name, p in hf.named_parameters() if name.endswith(".bias")
        }
    missing, unexpected = hf.load_state_dict(ours, strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:  # transformers ties lm_head itself
        names = ", ".join([*missing, *unexpected][:3])
        fail(f"cannot export: weights that do not map onto GPT-2 ({names})")
    hf.config.exported_by = EXPORTED_BY  # so that a later export knows the folder as its own
    write_folder(directory, hf.save_pretrained)
    print(f"exported to {directory}: load it with "
          f"transformers.GPT2LMHeadModel.from_pretrained({directory!r})")  # fmt: skip
    if checkpoint["tokenizer"]["kind"] == "char":
        print("(a character-level model: token i is the i-th character of the checkpoint's "
              "vocabulary, not a GPT-2 token)")  # fmt: skip


EXPORTED_BY = "gpt.py --export_hf"  # in config.json, beside transformers' own fields
EXPORT_FILES = {"config.json", "generation_config.json", "model.safetensors"}


def not_an_export(directory: str) -> str:
    """The files in directory that an export would not replace, named; '' where there are none
    (no folder, an empty one, or an earlier export: its config.json says it is one)."""
    names = os.listdir(directory) if os.path.isdir(directory) else []
    names.sort(key=lambda name: (name.startswith("."), name))  # hidden files named last
    try:
        with open(os.path.join(directory, "config.json")) as f:
            ours = json.load(f).get("exported_by") == EXPORTED_BY
    except (OSError, ValueError, AttributeError):
        ours = False
    others = [name for name in names if not (ours and name in EXPORT_FILES)]
    return ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")


def write_folder(directory: str, save: Callable[[str], None]) -> None:
    """save(folder) into a new folder beside directory, whose files then replace directory's:
    a save that fails (a full disk) leaves no half-written folder and the earlier one whole."""
    parent = os.path.dirname(os.path.abspath(directory))
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(directory)}.{TEMP_MARK}")
    try:
        save(staging)
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(staging):
            replace(os.path.join(staging, name), os.path.join(directory, name))
    except Exception as e:  # transformers and safetensors raise their own kinds
        reason = getattr(e, "strerror", None) or str(e).split("\n")[0][:80]
        fail(f"cannot write {directory!r} ({reason}): free some space, or pick another "
             "--export_hf folder")  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -----------------------------------------------------------------------------
# Saved models: loading one, and printing samples of it.


def load_model(
    path: str, device: str, attention: str = "auto", dtype: torch.dtype = torch.float32
) -> tuple[GPT, Tokenizer, dict]:
    """A model gpt.py saved: shape and tokenizer from the file, attention to suit dtype."""
    checkpoint = load_checkpoint(path, device)
    return *model_from(checkpoint, path, device, attention, dtype), checkpoint


def model_from(
    checkpoint: dict, path: str, device: str, attention: str, dtype: torch.dtype
) -> tuple[GPT, Tokenizer]:
    try:
        config = GPTConfig(**checkpoint["config"])
        config.attention = pick_attention(attention, device, dtype, config.block_size)
        model = GPT(config).to(device)
        model.load_state_dict(checkpoint["model"])
    except (TypeError, KeyError, RuntimeError) as e:
        fail(f"{path!r} holds weights that do not fit the model its config describes "
             f"({type(e).__name__})")  # fmt: skip
    return model, tokenizer_from(checkpoint)


def saved_model(hp: Settings, overrides: dict) -> dict | GPT:
    """What --sample or --export_hf uses: model_file's checkpoint, or for --sample --init_from,
    GPT-2 as it is. Shape flags are refused: the shape is the saved model's."""
    if hp.sample and hp.init_from:
        print(f"sampling {hp.init_from} as it is (to sample a model fine-tuned from it, drop "
              "--init_from)")  # fmt: skip
        model = from_pretrained(hp.init_from)
        saved, start = {**dataclasses.asdict(model.config), "tokenizer": "gpt2"}, model
    else:
        start = load_checkpoint(hp.model_file, "cpu")
        saved = {**start["config"], "tokenizer": start["tokenizer"]["kind"]}
    if hp.sample:
        refuse_another_shape(
            saved, overrides, "sample", "drop that flag: --sample reads the shape from the model"
        )
    return start


def use_saved_model(hp: Settings, hw: Hardware, load: Callable[[], dict | GPT]) -> None:
    """--export_hf: write the saved model for transformers. --sample: print samples of it."""
    saved = load()
    if hp.export_hf:
        return export_hf(saved, hp.export_hf)
    if isinstance(saved, GPT):  # GPT-2 itself
        model, tokenizer = saved.to(hw.device), make_tokenizer("gpt2")
        use_attention(
            model, pick_attention(hp.attention, hw.device, hw.dtype, model.config.block_size)
        )
    else:
        model, tokenizer = model_from(saved, hp.model_file, hw.device, hp.attention, hw.dtype)
        print(f"loaded {hp.model_file}: step {saved['step']}, "
              f"val loss {saved['best_val_loss']:.4f}")  # fmt: skip
    check_readable(tokenizer, hp.prompt)
    print_samples(model, tokenizer, hp, hw)


def generate_text(
    model: GPT, tokenizer: Tokenizer, prompt: str, num_samples: int, max_new_tokens: int,
    seed: int, use_cache: bool = True, **sampling,
) -> Iterator[list[str]]:  # fmt: skip
    """Yield each sample's new text, piece by piece: first the prompt, then a piece per token.

    A GPT-2 token can end halfway through a multi-byte character, so the bytes go through an
    incremental UTF-8 decoder, which holds back an unfinished character until its last byte.
    A sample ends at its tokenizer's stop token (GPT-2's <|endoftext|>) or after max_new_tokens.
    """
    model.eval()
    device = next(model.parameters()).device
    prompt_ids = tokenizer.encode(prompt) if prompt else [tokenizer.start_token]
    idx = torch.tensor([prompt_ids] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)  # same seed, same text
    decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in idx]
    done = [False] * num_samples
    yield [prompt] * num_samples
    for next_tokens in model.stream(
        idx, max_new_tokens, use_cache, generator=generator, **sampling
    ):
        pieces = []
        for i, token in enumerate(next_tokens[:, 0].tolist()):
            done[i] = done[i] or token == tokenizer.stop_token
            pieces.append("" if done[i] else decoders[i].decode(token_bytes(tokenizer, token)))
        yield pieces
        if all(done):
            break
    yield [decoder.decode(b"", final=True) for decoder in decoders]  # bytes still held back


def token_bytes(tokenizer: Tokenizer, token: int) -> bytes:
    if isinstance(tokenizer, GPT2Tokenizer):
        return tokenizer.enc.decode_single_token_bytes(token)  # may be part of a character
    return tokenizer.chars[token].encode("utf-8")


@torch.no_grad()
def attention_maps(model: GPT, idx: torch.Tensor) -> list[torch.Tensor]:
    """Every block's attention weights for the tokens idx (1, T): a (n_head, T, T) tensor a block.
    attention_by_hand computes them: with the identity matrix as the values, it returns weights."""
    inputs = []  # what each block's attention reads (after its LayerNorm), caught on the way in
    hooks = [
        b.attn.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
        for b in model.blocks
    ]
    try:
        model.eval()(idx)
    finally:
        for hook in hooks:
            hook.remove()
    maps, T = [], idx.size(1)
    for block, x in zip(model.blocks, inputs):
        n_head, C = block.attn.n_head, x.size(-1)
        q, k, _ = block.attn.c_attn(x).split(C, dim=2)  # as CausalSelfAttention.forward
        q, k = (t.view(1, T, n_head, C // n_head).transpose(1, 2) for t in (q, k))
        identity = torch.eye(T, device=idx.device, dtype=q.dtype).expand(1, n_head, T, T)
        maps.append(attention_by_hand(q, k, identity)[0])  # (n_head, T, T)
    return maps


def sampling_options(hp: Hyperparameters) -> dict:
    return dict(temperature=hp.temperature, top_k=hp.top_k, top_p=hp.top_p)


def for_sampling(model: GPT, dtype: torch.dtype) -> GPT:
    """The model, its matrices held in bf16 once where autocast computes in bf16 (in place).

    Writing a token reads every weight once, so memory traffic, not arithmetic, sets the speed:
    bf16 halves the bytes, and autocast no longer converts fp32 weights anew for every token. The
    position embeddings and LayerNorms stay fp32, so the residual stream adds in fp32 as in
    training. The tokens may differ from fp32's where two candidates score almost the same."""
    if dtype == torch.bfloat16:
        for module in model.modules():
            if isinstance(module, nn.Linear):  # lm_head's weight is wte's: both become bf16
                module.to(dtype)
    return model


def print_samples(model: GPT, tokenizer: Tokenizer, hp: Hyperparameters, hw: Hardware) -> None:
    """One sample streams to the terminal as it is written; several are drawn as a batch."""
    model = for_sampling(model, hw.dtype)
    texts, streaming = [""] * hp.num_samples, hp.num_samples == 1
    if streaming:
        print("\n--- sample 1 of 1 ---")
    with hw.autocast:
        for pieces in generate_text(model, tokenizer, hp.prompt, hp.num_samples, hp.max_new_tokens,
                                    hp.seed, hp.kv_cache, **sampling_options(hp)):  # fmt: skip
            texts = [text + piece for text, piece in zip(texts, pieces)]
            if streaming:
                print(pieces[0], end="", flush=True)
    if streaming:
        print()
    else:
        for i, text in enumerate(texts):
            print(f"\n--- sample {i + 1} of {hp.num_samples} ---\n{text}")
    say_if_unshown("".join(texts))


def say_if_unshown(text: str) -> None:
    """Where the output's encoding cannot show every character of text, say so and how to fix it
    (see show_any_text)."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        say_unshown_once(encoding)
    except LookupError:  # an encoding Python does not know
        pass


@functools.cache
def say_unshown_once(encoding: str) -> None:
    print(f"(some characters cannot be shown in this output's encoding, {encoding}, and print "
          "as '?': set PYTHONUTF8=1 to see them)", file=sys.stderr)  # fmt: skip


def show_any_text() -> None:
    """Print text the output's encoding cannot show as '?', rather than stop the run with a
    UnicodeEncodeError: Windows encodes a redirected or piped output, an IDE's console, Git Bash
    in its ANSI code page (cp1252 in Western Europe), which has no Greek, Cyrillic or Japanese."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):  # not a reconfigurable text stream
            stream.reconfigure(errors="replace")


def run_command_line(main: Callable[[list[str]], None]) -> None:
    """main(the command line's arguments), with every failure a user can cause told in one line
    (bigram.py runs this way too)."""
    show_any_text()
    try:
        try:
            main(sys.argv[1:])
        except Interrupted as stop:
            stop.args[0]()
        return
    except UserError as e:
        message = f"error: {e}"
    except KeyboardInterrupt:
        message = None  # Ctrl-C outside training (loading, sampling): stop quietly
    except (MemoryError, torch.cuda.OutOfMemoryError):  # the computer's RAM, or a GPU's
        message = OUT_OF_MEMORY
    except RuntimeError as e:  # PyTorch's CPU allocator says so in a RuntimeError
        if not any(words in str(e) for words in OUT_OF_MEMORY_WORDS):
            raise
        message = OUT_OF_MEMORY
    except BrokenPipeError:  # the reader stopped, as `python gpt.py --sample | head` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so exit's flush is quiet
        sys.exit(1)
    except OSError as e:  # a file that a check before could not foresee
        message = f"error: {e.strerror or e}" + (f": {e.filename!r}" if e.filename else "")
    for bar in list(getattr(tqdm, "_instances", [])):  # so the message starts a line of its own
        bar.close()
    if message:  # one write of the whole line: torchrun's processes share the terminal
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    sys.exit(1 if message else 130)


# how PyTorch says it: its CPU allocator on Linux and macOS, on Windows, and a GPU's
OUT_OF_MEMORY_WORDS = ("can't allocate memory", "not enough memory", "out of memory")
OUT_OF_MEMORY = ("error: out of memory: use a smaller --batch_size, --block_size or model "
                 "(or fewer --num_samples)")  # fmt: skip

signal.signal(signal.SIGINT, CTRL_C)  # loaded: Ctrl-C is a KeyboardInterrupt again

if __name__ == "__main__":
    run_command_line(main)
