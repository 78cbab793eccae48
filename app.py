"""A web page to play with a trained model: `python app.py`, then open http://127.0.0.1:7860.

It needs gradio (pip install -r requirements-app.txt). Every limit below is enforced here, on the
server, whatever a browser or a script sends; the widgets only make the limits easy to see.
"""

import argparse
import codecs
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

import gpt

try:
    import gradio as gr
    import pandas as pd  # a dependency of gradio's: its plots take DataFrames
    from starlette.middleware import Middleware  # gradio's web framework
except ImportError:
    gr = pd = Middleware = None  # main() says how to install it
try:
    import matplotlib

    matplotlib.use("Agg")  # draw into images for the page; no window
    from matplotlib.figure import Figure
except ImportError:
    Figure = None  # the attention heatmap says how to install it

MAX_PROMPT_CHARS = 2000  # longer prompts are refused with a message
MAX_NEW_TOKENS = 1000  # tokens generated per output
MAX_OUTPUTS = 8  # outputs per click, drawn together as one batch
MAX_TEMPERATURE = 2.0  # above 2 the text is noise
MIN_TEMPERATURE = 1e-6  # gpt.py's floor for --temperature above 0: below it the scores overflow
MIN_TOP_P = 0.01  # top-p 0 would cut every token; 0.01 keeps at least the likeliest
MAX_SEED = 2**31 - 1
MAX_BODY_BYTES = 1_000_000  # a request's body: a prompt at its limit takes a few kilobytes
UPDATE_SECONDS = 0.1  # how often the text so far is sent to the page: often enough to look live
TOP_TOKENS = 10  # next tokens shown on the "Look inside" tab
# One model serves every visitor, one computation at a time: gpt.attention_maps hooks the model's
# blocks while it runs, and a forward pass in another thread would feed the hooks its tokens.
MODEL_LOCK = threading.Lock()


class RefuseLargeBodies:
    """Middleware that answers 413 to a request whose body is over max_bytes before anything
    reads it, so a huge post cannot fill the server's memory ahead of the prompt limit."""

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        declared = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if scope["type"] == "http" and declared.isdigit() and int(declared) > self.max_bytes:
            await send({"type": "http.response.start", "status": 413, "headers": []})
            await send({"type": "http.response.body", "body": b"request body too large"})
            return
        received = 0

        async def counting_receive() -> dict:  # a body sent in chunks, with no length declared
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return {"type": "http.disconnect"} if received > self.max_bytes else message

        await self.app(scope, counting_receive if scope["type"] == "http" else receive, send)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve a web page that generates text with a trained model."
    )
    parser.add_argument(  # gpt.py's name for the same file; --checkpoint is its earlier name here
        "--model_file", "--checkpoint", default="trained_model.pth", help="the model gpt.py saved"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every network)"
    )
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--share", action="store_true", help="also make a public link through gradio.live"
    )
    return parser.parse_args(argv)


def describe(checkpoint: dict, model: gpt.GPT, tokenizer: gpt.Tokenizer) -> str:
    """The model's facts in one line: size, tokenizer, how good it got, and where it was trained."""
    facts = [
        f"{model.num_params():,} parameters",
        f"{gpt.tokenizer_info(tokenizer)['kind']} tokenizer ({tokenizer.vocab_size:,} tokens)",
        f"val loss {checkpoint.get('best_val_loss', float('nan')):.4f}",
        f"step {checkpoint.get('step', 0):,}",
    ]
    hp = checkpoint.get("hyperparameters") or {}
    if hp.get("input_file"):
        facts.append(
            f"trained on {hp['input_file']}" + (f" ({hp['device']})" if hp.get("device") else "")
        )
    return " · ".join(facts)


def clamp(value: object, low: float, high: float) -> float:
    """value as a number between low and high; anything that is not a number counts as low, and
    a number past either end (infinity, an int too big for a float) as that end."""
    try:
        number = float(value)
    except OverflowError:  # an int too big for a float is past one end or the other
        return high if value > 0 else low
    except (TypeError, ValueError):
        return low
    return low if math.isnan(number) else min(max(number, low), high)


def clamp_temperature(value: object) -> float:
    """value as a temperature from 0 to MAX_TEMPERATURE. One above 0 but below MIN_TEMPERATURE,
    which gpt.py refuses, acts as 0 (greedy) rather than as MIN_TEMPERATURE: sampling that cold
    takes the likeliest token all but always, and the status line then says so plainly."""
    temperature = clamp(value, 0.0, MAX_TEMPERATURE)
    return temperature if temperature >= MIN_TEMPERATURE else 0.0


def token_id(token: object, vocab_size: int) -> int | None:
    """token as a token id, as the page sends a clicked one (an int, or its digits as a string),
    or None if it is not one from 0 to vocab_size - 1."""
    if isinstance(token, str) and token.isascii() and token.isdecimal():  # not '²', '-1' or ' 7'
        try:
            token = int(token)
        except ValueError:  # more digits than Python reads into an int: no id is that long
            return None
    return token if type(token) is int and 0 <= token < vocab_size else None  # not True or 7.0


def first_sentence(error: Exception) -> str:
    return str(error).strip().split("\n")[0].split(". ")[0].removesuffix(".")


def one_at_a_time(steps: Iterator) -> Iterator:
    """The steps of a generation, each taken holding MODEL_LOCK: other visitors' clicks get their
    turn between two tokens, not after the whole text."""
    while True:
        with MODEL_LOCK:
            step = next(steps, None)
        if step is None:
            return
        yield step


def make_generate(
    model: gpt.GPT, tokenizer: gpt.Tokenizer
) -> Callable[..., Iterator[tuple[str, list[str]]]]:
    # the arguments arrive as the browser or a script sent them (preprocess=False below):
    # anything at all
    def generate(
        prompt: object,
        max_new_tokens: object,
        num_outputs: object,
        temperature: object,
        top_k: object,
        seed: object,
        top_p: object = 1.0,  # last: scripts that send the first six keep working
    ) -> Iterator[tuple[str, list[str]]]:
        """Stream the outputs: a status line, and the text so far of each output asked for (none
        when the prompt is refused), prompt first."""
        prompt = prompt if isinstance(prompt, str) else ""
        if len(prompt) > MAX_PROMPT_CHARS:
            limit = f"the limit is {MAX_PROMPT_CHARS:,}"
            yield f"The prompt has {len(prompt):,} characters; {limit}.", []
            return
        n = int(clamp(num_outputs, 1, MAX_OUTPUTS))
        tokens = int(clamp(max_new_tokens, 1, MAX_NEW_TOKENS))
        temperature = clamp_temperature(temperature)
        top_k = int(clamp(top_k, 0, tokenizer.vocab_size))
        seed = int(clamp(seed, 0, MAX_SEED))
        top_p = clamp(top_p, MIN_TOP_P, 1.0)
        settings = (f"{n} × up to {tokens:,} tokens, temperature {temperature:g}, "
                    f"top-k {top_k or 'off'}, top-p {top_p:g}, seed {seed}")  # fmt: skip
        texts, last_update = [""] * n, 0.0
        try:
            gpt.check_readable(tokenizer, prompt)
            sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p)
            steps = gpt.generate_text(model, tokenizer, prompt, n, tokens, seed, **sampling)
            for pieces in one_at_a_time(steps):
                texts = [text + piece for text, piece in zip(texts, pieces)]
                if time.monotonic() - last_update > UPDATE_SECONDS:
                    last_update = time.monotonic()
                    yield f"Writing {settings} ...", texts
        except gpt.UserError as e:  # e.g. a character the model has never seen
            yield f"Cannot generate: {e}", []
            return
        yield f"Done: {settings}.", texts

    return generate


# The "Look inside" tab: what the model computes for a text, from gpt.py's own functions.


def shown(piece: str) -> str:
    """A token as a label: spaces and line ends made visible ('␣the', '↵')."""
    visible = piece.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in visible) or "∅"


def labels(tokenizer: gpt.Tokenizer, ids: list[int]) -> list[str]:
    """A label per token, as decoding it alone gives (GPT-2 tokens that are part of a character
    decode to '�')."""
    return [shown(tokenizer.decode([i])) for i in ids]


def distinct(names: list[str], ids: list[int]) -> list[str]:
    """names, each once (a bar chart's axis needs that): a repeated one gets its token's id."""
    return [name if names.count(name) == 1 else f"{name} #{i}" for name, i in zip(names, ids)]


def pieces(tokenizer: gpt.Tokenizer, ids: list[int]) -> list[str]:
    """The text of each token, which together make the text: a character split over several
    GPT-2 tokens belongs to the token that finishes it (as gpt.generate_text decodes)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return [decoder.decode(gpt.token_bytes(tokenizer, i)) for i in ids]


def read_text(tokenizer: gpt.Tokenizer, text: object, block_size: int) -> tuple[list[int], int]:
    """The tokens of text (as a script sent it: anything at all), and how many of the first
    ones the model cannot see: it reads the last block_size. Raises gpt.UserError."""
    text = text if isinstance(text, str) else ""
    if len(text) > MAX_PROMPT_CHARS:
        raise gpt.UserError(
            f"the text has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}"
        )
    gpt.check_readable(tokenizer, text)  # e.g. a character a char model has never seen
    ids = tokenizer.encode(text) if text else [tokenizer.start_token]  # as gpt.generate_text
    return ids, max(0, len(ids) - block_size)


def beyond_context(unseen: int, block_size: int) -> str:
    """A sentence for a caption, when the text is longer than the model's context."""
    if not unseen:
        return ""
    return f" The model reads {block_size:,} tokens at most: it leaves out the first {unseen:,}."


def next_token_table(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> tuple[list[int], torch.Tensor, torch.Tensor, list[str]]:
    """For the TOP_TOKENS likeliest next tokens after logits (vocab_size,): their ids, the model's
    own probabilities, the probabilities they are drawn with (gpt.next_token_probs, renormalised:
    top-p leaves less than 1 in all), and whether each is kept or cut."""
    logits = logits.float()[None]  # (1, vocab_size), as gpt.sample_next_token gets it
    own = F.softmax(logits, dim=-1)[0]  # (vocab_size,)
    if temperature == 0:  # greedy: sample_next_token takes the likeliest, every time
        drawn = F.one_hot(logits.argmax(dim=-1), logits.size(-1))[0].float()
        cut_by_k = drawn == 0
        cut_by_p = torch.zeros_like(cut_by_k)
    else:
        drawn = gpt.next_token_probs(logits, temperature, top_k, top_p)[0]
        cut_by_k = gpt.next_token_probs(logits, temperature, top_k, 1.0)[0] == 0
        # a probability can also round to 0 at a low temperature: only top-p < 1 cuts
        cut_by_p = (drawn == 0) & ~cut_by_k & (top_p < 1.0)
    drawn = drawn / drawn.sum()
    ids = own.topk(min(TOP_TOKENS, own.numel())).indices.tolist()
    reason = "cut: greedy" if temperature == 0 else "cut by top-k"
    status = [reason if cut_by_k[i] else "cut by top-p" if cut_by_p[i] else "kept" for i in ids]
    return ids, own[ids], drawn[ids], status


def make_inside(model: gpt.GPT, tokenizer: gpt.Tokenizer) -> dict[str, Callable]:
    """The tab's three views of a text, each a function of what the page sends (anything at
    all: the values are clamped here, as generate() does)."""
    block_size = model.config.block_size

    @torch.no_grad()
    def logits_for(ids: list[int]) -> torch.Tensor:
        with MODEL_LOCK:
            logits, _ = model.eval()(torch.tensor([ids]))  # the forward that trains and samples
        return logits[0]  # (T, vocab_size)

    def next_tokens(text: object, temperature: object, top_k: object, top_p: object) -> list:
        """A caption, the chart of the likeliest next tokens, and those tokens to click."""
        temperature = clamp_temperature(temperature)
        top_k = int(clamp(top_k, 0, tokenizer.vocab_size))
        top_p = clamp(top_p, MIN_TOP_P, 1.0)
        try:
            ids, unseen = read_text(tokenizer, text, block_size)
        except gpt.UserError as e:
            return [f"Cannot look: {e}", None, gr.Radio(choices=[], value=None)]
        last = logits_for(ids[unseen:])[-1]
        top, own, drawn, status = next_token_table(last, temperature, top_k, top_p)
        names = distinct(labels(tokenizer, top), top)
        chart = pd.DataFrame({
            "token": names,
            # a kept token's bar: its chance to be drawn; a cut one's: the model's own probability
            "probability": [d if s == "kept" else o for d, o, s in zip(drawn.tolist(),
                                                                      own.tolist(), status)],
            "status": status,
            "drawn": drawn.tolist(),  # with these settings; sums to 1 over every kept token
            "model": own.tolist(),  # at temperature 1, nothing cut
            "id": top,
        })  # fmt: skip
        settings = (f"temperature {temperature:g}, top-k {top_k or 'off'}, "
                    f"top-p {top_p:g}")  # fmt: skip
        caption = (
            f"The {len(top)} likeliest next tokens after {len(ids) - unseen:,} tokens, with "
            f"{settings}. Coloured: the chance of being drawn; grey: cut, at the model's own "
            f"probability.{beyond_context(unseen, block_size)}"
        )
        choices = [(f"{name}  {p:.0%}" if s == "kept" else f"{name}  (cut)", i)
                   for name, p, s, i in zip(names, drawn.tolist(), status, top)]  # fmt: skip
        return [caption, gr.BarPlot(chart, sort=names), gr.Radio(choices=choices, value=None)]

    def append(text: object, token: object) -> str:
        """The text with the clicked token's text added (unchanged if token is not a token id or
        the text would get too long)."""
        text = text if isinstance(text, str) else ""
        i = token_id(token, tokenizer.vocab_size)
        if i is None:
            return text  # not a token id: nothing was clicked
        longer = text + tokenizer.decode([i])
        return longer if len(longer) <= MAX_PROMPT_CHARS else text

    def attention(text: object, layer: object, head: object) -> list:
        """A caption and the heatmap of one head's attention weights over the text."""
        layer = int(clamp(layer, 0, model.config.n_layer - 1))
        head = int(clamp(head, 0, model.config.n_head - 1))
        try:
            ids, unseen = read_text(tokenizer, text, block_size)
        except gpt.UserError as e:
            return [f"Cannot look: {e}", None]
        ids = ids[unseen:]
        if Figure is None:
            return ["The attention heatmap needs matplotlib: pip install matplotlib", None]
        with MODEL_LOCK:
            weights = gpt.attention_maps(model, torch.tensor([ids]))[layer][head]  # (T, T)
        caption = (
            f"Layer {layer}, head {head}: row by row, how much each token's output mixes in "
            f"each earlier token (each row sums to 1; no token sees later ones, above the "
            f"diagonal).{beyond_context(unseen, block_size)}"
        )
        title = f"layer {layer}, head {head}"
        return [caption, attention_figure(weights.float().numpy(), labels(tokenizer, ids), title)]

    def surprise(text: object) -> list:
        """A caption, the text shaded by the model's loss on each token, and the numbers."""
        try:
            ids, unseen = read_text(tokenizer, text, block_size)
        except gpt.UserError as e:
            return [f"Cannot look: {e}", None, None]
        window = ids[unseen:]
        if len(window) < 2:
            return ["Type at least two tokens: the first has no prediction to score.", None, None]
        logits = logits_for(window)
        targets = torch.tensor(window[1:])
        # the loss gpt.py trains on, per token instead of averaged
        losses = F.cross_entropy(logits[:-1].float(), targets, reduction="none").tolist()
        full = math.log(tokenizer.vocab_size)  # a uniform guess's loss: the fullest shade
        texts = pieces(tokenizer, ids)
        shaded = [("".join(texts[: unseen + 1]), None)]  # unseen, and the first: no prediction
        shaded += [(t, min(loss / full, 1.0)) for t, loss in zip(texts[unseen + 1 :], losses)]
        table = pd.DataFrame({
            "position": range(unseen + 1, len(ids)),
            "token": labels(tokenizer, window[1:]),
            "surprise (nats)": [round(loss, 4) for loss in losses],
            "probability": [round(math.exp(-loss), 4) for loss in losses],
        })  # fmt: skip
        worst = max(range(len(losses)), key=losses.__getitem__)
        caption = (
            f"Mean surprise {sum(losses) / len(losses):.3f} nats: the model's loss on this text "
            f"(a uniform guess scores ln {tokenizer.vocab_size:,} = {full:.2f}, the fullest red). "
            f"The first token has no prediction and is not shaded. Most surprising: "
            f"{shown(texts[unseen + 1 + worst])!r} ({losses[worst]:.2f})."
            f"{beyond_context(unseen, block_size)}"
        )
        return [caption, shaded, table]

    return dict(next_tokens=next_tokens, append=append, attention=attention, surprise=surprise)


def attention_figure(weights: np.ndarray, names: list[str], title: str) -> "Figure":
    """weights (T, T) as a heatmap: rows the tokens, columns the tokens they look at. The future,
    above the diagonal, is grey: the causal triangle."""
    T = len(names)
    fig = Figure(figsize=(5.2, 4.4), dpi=100, layout="constrained")  # fits a laptop screen
    ax = fig.subplots()
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#e8e8e8")
    image = ax.imshow(np.ma.masked_array(weights, future), cmap=cmap, vmin=0, vmax=1)
    every = math.ceil(T / 40)  # at most 40 labels an axis; more would overlap
    ticks = list(range(0, T, every))
    size = 10 if T <= 16 else 8 if T <= 32 else 6
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=size)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=size)
    ax.set_xlabel("looks at")
    ax.set_ylabel("token")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="attention weight")
    return fig


def build_page(model: gpt.GPT, tokenizer: gpt.Tokenizer, facts: str) -> "gr.Blocks":
    with gr.Blocks(title="gpt.py", analytics_enabled=False) as page:
        gr.Markdown(f"## Write with a gpt.py model\n{facts}")
        with gr.Tab("Write"):
            build_write_tab(model, tokenizer)
        with gr.Tab("Look inside") as tab:
            build_inside_tab(model, tokenizer, tab)
    return page


def build_write_tab(model: gpt.GPT, tokenizer: gpt.Tokenizer) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(
                label="Prompt",
                lines=8,
                max_length=MAX_PROMPT_CHARS,
                placeholder="Empty: the model starts from scratch",
                info=f"Up to {MAX_PROMPT_CHARS:,} characters. A char model reads only "
                "the characters it saw.",
            )
            with gr.Row():
                button = gr.Button("Generate", variant="primary")
                stop = gr.Button("Stop", variant="stop")
        with gr.Column(scale=2):
            length = gr.Slider(
                1, MAX_NEW_TOKENS, value=300, step=1, label="max length (new tokens)"
            )
            outputs = gr.Slider(1, MAX_OUTPUTS, value=2, step=1, label="number of outputs")
            temperature, top_k, top_p = sampling_sliders(tokenizer, temperature=0.8)
            seed = gr.Number(value=1337, precision=0, label="seed", info="same seed, same text")
    status = gr.Markdown(label="status")
    boxes = [
        gr.Textbox(label=f"output {i + 1}", lines=6, visible=i < outputs.value)
        for i in range(MAX_OUTPUTS)
    ]

    def show_boxes(n: float) -> list:  # a box per output; generate() returns plain strings
        return [gr.Textbox(visible=i < n) for i in range(MAX_OUTPUTS)]

    outputs.change(show_boxes, outputs, boxes, queue=False, api_visibility="private")
    generate = make_generate(model, tokenizer)

    def fill_boxes(*settings: object) -> Iterator[list[str]]:
        """generate() for the page: the status line, then a value for every box (empty past the
        number of outputs)."""
        for line, texts in generate(*settings):
            yield [line, *texts, *[""] * (MAX_OUTPUTS - len(texts))]

    # preprocess=False: the values reach generate() as sent and it clamps them itself. (Gradio
    # would reject an out-of-range slider value instead.) One generation at a time, the page's
    # or a script's (one concurrency_id); the rest wait in the queue. Scripts get an endpoint of
    # their own, below, so that they receive as many texts as they asked for, not a value per box.
    writing = button.click(
        fill_boxes,
        [prompt, length, outputs, temperature, top_k, seed, top_p],
        [status, *boxes],
        api_visibility="private",
        preprocess=False,
        concurrency_limit=1,
        concurrency_id="generate",
    )

    # gr.api reads the endpoint's inputs and outputs from these type hints, for its API page and
    # gradio_client, so the return hint is what each update of the stream is (a status line and a
    # list of texts), not Iterator[...]. The values still arrive as sent, whatever their type, and
    # generate() clamps them.
    def generate_api(
        prompt: str,
        max_new_tokens: int,
        num_outputs: int,
        temperature: float,
        top_k: int,
        seed: int,
        top_p: float = 1.0,  # last: scripts that send the first six keep working
    ) -> tuple[str, list[str]]:
        """Generate num_outputs texts, each starting with the prompt. Streams (status line, texts
        so far); the last update says Done. A refused prompt gives its reason and no texts."""
        yield from generate(prompt, max_new_tokens, num_outputs, temperature, top_k, seed, top_p)

    gr.api(generate_api, api_name="generate", concurrency_limit=1, concurrency_id="generate")
    # Stop cancels the generation between two tokens; the text so far stays in the boxes. The
    # status changes after the cancel, so that no late update of the generation overwrites it
    stop.click(None, cancels=[writing], api_visibility="private").then(
        lambda: "Stopped.", None, status, queue=False, api_visibility="private"
    )


def sampling_sliders(tokenizer: gpt.Tokenizer, temperature: float) -> tuple:
    return (
        gr.Slider(0, MAX_TEMPERATURE, value=temperature, step=0.05, label="temperature",
                  info="0: always the likeliest"),
        gr.Slider(0, tokenizer.vocab_size, value=0, step=1, label="top-k (0 = off)",
                  info="keep the k likeliest tokens"),
        gr.Slider(MIN_TOP_P, 1.0, value=1.0, step=0.01, label="top-p (1 = off)",
                  info="keep the likeliest tokens until their probabilities add up to p"),
    )  # fmt: skip


def build_inside_tab(model: gpt.GPT, tokenizer: gpt.Tokenizer, tab: "gr.Tab") -> None:
    inside = make_inside(model, tokenizer)
    n_layer, n_head = model.config.n_layer, model.config.n_head
    with gr.Row():
        text = gr.Textbox(
            label="Text the model reads",
            lines=6,
            max_length=MAX_PROMPT_CHARS,
            placeholder="Empty: the model starts from scratch",
            info="Change it, or click a next token below to add it.",
            scale=3,
        )
        with gr.Column(scale=2):
            temperature, top_k, top_p = sampling_sliders(tokenizer, temperature=1.0)
    gr.Markdown("### What comes next")
    next_caption = gr.Markdown()
    with gr.Row():
        chart = gr.BarPlot(
            x="token",
            y="probability",
            color="status",
            color_map={"kept": "#e8710a", "cut by top-k": "#9e9e9e",
                       "cut by top-p": "#c4c4c4", "cut: greedy": "#9e9e9e"},
            y_lim=[0, 1],
            tooltip="all",  # hovering shows the id, the model's and the drawn probability
            colors_in_legend=["kept", "cut by top-k", "cut by top-p", "cut: greedy"],
            label="next-token probabilities",
            elem_id="next-tokens",
            scale=3,
        )  # fmt: skip
        # a clickable bar chart is not something Gradio's plots offer: the tokens are a list
        choices = gr.Radio(label="Click a token to add it to the text", scale=2)
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Attention")
            with gr.Row():
                # a slider from 0 to 0 is not one: a one-layer model gets a slider it cannot move
                layer = gr.Slider(
                    0,
                    max(n_layer - 1, 1),
                    value=0,
                    step=1,
                    label="layer",
                    interactive=n_layer > 1,
                    info="0: the first block",
                )
                head = gr.Slider(0, max(n_head - 1, 1), value=0, step=1, label="head",
                                 interactive=n_head > 1)  # fmt: skip
            attention_caption = gr.Markdown()
            heatmap = gr.Plot(label="attention weights", format="png", elem_id="attention")
        with gr.Column():
            gr.Markdown("### Surprise")
            surprise_caption = gr.Markdown()
            shaded = gr.HighlightedText(
                label="each token shaded by the model's loss on it", elem_id="surprise"
            )
            with gr.Accordion("the numbers", open=False):
                table = gr.Dataframe(label="surprise per token", max_height=300)
    # Every view is computed when the tab opens and again when its inputs change: always_last
    # skips the values a dragged slider passes through. preprocess=False: the values arrive as
    # sent, and the functions clamp them.
    views = [
        ("next_tokens", [text, temperature, top_k, top_p], [next_caption, chart, choices]),
        ("attention", [text, layer, head], [attention_caption, heatmap]),
        ("surprise", [text], [surprise_caption, shaded, table]),
    ]
    for name, inputs, outputs in views:
        gr.on(
            [tab.select, *(component.change for component in inputs)],
            inside[name],
            inputs,
            outputs,
            api_name=name,
            preprocess=False,
            trigger_mode="always_last",
            # Gradio 6.31 leaves always_last's outputs looking busy (faded) after a second trigger
            # came during the first; the views take well under a second anyway
            show_progress="hidden",
        )
    # .input: only a click, not the list being refilled; the text's change redraws the views
    choices.input(
        inside["append"], [text, choices], text, api_name="append_token", preprocess=False
    )


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if not 1 <= args.port <= 65535:
        sys.exit(f"error: --port must be from 1 to 65535, not {args.port}")
    if gr is None:
        sys.exit("app.py needs gradio: pip install -r requirements-app.txt")
    try:
        # small models generate fine in fp32 on a CPU
        model, tokenizer, checkpoint = gpt.load_model(args.model_file, "cpu")
    except gpt.UserError as e:
        sys.exit(f"error: {e}")
    page = build_page(model, tokenizer, describe(checkpoint, model, tokenizer))
    page.queue(default_concurrency_limit=1)
    try:
        _, local_url, share_url = page.launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            quiet=True,
            prevent_thread_lock=True,
            app_kwargs={"middleware": [Middleware(RefuseLargeBodies, max_bytes=MAX_BODY_BYTES)]},
        )
    except OSError as e:  # the port is taken, or the host is not this machine's
        sys.exit(f"error: cannot serve on {args.host}:{args.port}: {first_sentence(e)}; "
                 "try another --port or --host")  # fmt: skip
    also = f" and {share_url}" if share_url else ""
    print(f"serving {args.model_file} at {local_url}{also} (Ctrl+C stops)")
    page.block_thread()


if __name__ == "__main__":
    main(sys.argv[1:])
