"""A web page to play with a trained model: `python app.py`, then open http://127.0.0.1:7860.

It needs gradio (pip install -r requirements-app.txt). Every limit below is enforced here, on the
server, whatever a browser or a script sends; the widgets only make the limits easy to see.
"""

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator

import gpt

try:
    import gradio as gr
except ImportError:
    gr = None  # main() says how to install it

MAX_PROMPT_CHARS = 2000  # longer prompts are refused with a message
MAX_NEW_TOKENS = 1000  # tokens generated per output
MAX_OUTPUTS = 8  # outputs per click, drawn together as one batch
MAX_TEMPERATURE = 2.0  # above 2 the text is noise
MAX_SEED = 2**31 - 1
UPDATE_SECONDS = 0.1  # how often the text so far is sent to the page: often enough to look live


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve a web page that generates text with a trained model."
    )
    parser.add_argument("--checkpoint", default="trained_model.pth", help="the model gpt.py saved")
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
        f"{tokenizer.to_dict()['kind']} tokenizer ({tokenizer.vocab_size:,} tokens)",
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
    """value as a number between low and high; anything that is not a number counts as low."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return low
    return low if math.isnan(number) else min(max(number, low), high)


def first_sentence(error: Exception) -> str:
    return str(error).strip().split("\n")[0].split(". ")[0].removesuffix(".")


def padded(texts: list[str]) -> list[str]:
    """A value for every output box: the texts, then empty boxes."""
    return texts + [""] * (MAX_OUTPUTS - len(texts))


def make_generate(model: gpt.GPT, tokenizer: gpt.Tokenizer) -> Callable[..., Iterator[list]]:
    # the arguments arrive as the browser or a script sent them (preprocess=False below):
    # anything at all
    def generate(
        prompt: object,
        max_new_tokens: object,
        num_outputs: object,
        temperature: object,
        top_k: object,
        seed: object,
    ) -> Iterator[list]:
        """Stream the outputs into the page: a status line, then a text per box, prompt first."""
        prompt = prompt if isinstance(prompt, str) else ""
        if len(prompt) > MAX_PROMPT_CHARS:
            yield [
                f"The prompt has {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}.",
                *padded([]),
            ]
            return
        n = int(clamp(num_outputs, 1, MAX_OUTPUTS))
        tokens = int(clamp(max_new_tokens, 1, MAX_NEW_TOKENS))
        temperature = clamp(temperature, 0.0, MAX_TEMPERATURE)
        top_k = int(clamp(top_k, 0, tokenizer.vocab_size))
        seed = int(clamp(seed, 0, MAX_SEED))
        settings = (f"{n} × up to {tokens:,} tokens, temperature {temperature:g}, "
                    f"top-k {top_k or 'off'}, seed {seed}")  # fmt: skip
        texts, last_update = [""] * n, 0.0
        try:
            gpt.check_readable(tokenizer, prompt)
            sampling = dict(temperature=temperature, top_k=top_k)
            for pieces in gpt.generate_text(model, tokenizer, prompt, n, tokens, seed, **sampling):
                texts = [text + piece for text, piece in zip(texts, pieces)]
                if time.monotonic() - last_update > UPDATE_SECONDS:
                    last_update = time.monotonic()
                    yield [f"Writing {settings} ...", *padded(texts)]
        except gpt.UserError as e:  # e.g. a character the model has never seen
            yield [f"Cannot generate: {e}", *padded([])]
            return
        yield [f"Done: {settings}.", *padded(texts)]

    return generate


def build_page(model: gpt.GPT, tokenizer: gpt.Tokenizer, facts: str) -> "gr.Blocks":
    with gr.Blocks(title="gpt.py", analytics_enabled=False) as page:
        gr.Markdown(f"## Write with a gpt.py model\n{facts}")
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
                button = gr.Button("Generate", variant="primary")
            with gr.Column(scale=2):
                length = gr.Slider(
                    1, MAX_NEW_TOKENS, value=300, step=1, label="max length (new tokens)"
                )
                outputs = gr.Slider(1, MAX_OUTPUTS, value=2, step=1, label="number of outputs")
                temperature = gr.Slider(
                    0, MAX_TEMPERATURE, value=0.8, step=0.05, label="temperature"
                )
                top_k = gr.Slider(0, tokenizer.vocab_size, value=0, step=1, label="top-k (0 = off)")
                seed = gr.Number(value=1337, precision=0, label="seed", info="same seed, same text")
        status = gr.Markdown(label="status")
        boxes = [
            gr.Textbox(label=f"output {i + 1}", lines=6, visible=i < outputs.value)
            for i in range(MAX_OUTPUTS)
        ]

        def show_boxes(n: float) -> list:  # a box per output; generate() returns plain strings
            return [gr.Textbox(visible=i < n) for i in range(MAX_OUTPUTS)]

        outputs.change(show_boxes, outputs, boxes, queue=False, api_visibility="private")
        # preprocess=False: the values reach generate() as sent and it clamps them itself. (Gradio
        # would reject an out-of-range slider value instead.) One generation at a time; the rest
        # wait in the queue.
        button.click(
            make_generate(model, tokenizer),
            [prompt, length, outputs, temperature, top_k, seed],
            [status, *boxes],
            api_name="generate",
            preprocess=False,
            concurrency_limit=1,
        )
    return page


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if gr is None:
        sys.exit("app.py needs gradio: pip install -r requirements-app.txt")
    try:
        # small models generate fine in fp32 on a CPU
        model, tokenizer, checkpoint = gpt.load_model(args.checkpoint, "cpu")
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
        )
    except OSError as e:  # the port is taken, or the host is not this machine's
        sys.exit(f"error: cannot serve on {args.host}:{args.port}: {first_sentence(e)}; "
                 "try another --port or --host")  # fmt: skip
    also = f" and {share_url}" if share_url else ""
    print(f"serving {args.checkpoint} at {local_url}{also} (Ctrl+C stops)")
    page.block_thread()


if __name__ == "__main__":
    main(sys.argv[1:])
