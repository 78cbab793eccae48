"""app.py, the web page: started as a user starts it, and called as the page calls it (gradio_client)."""

import http.client
import importlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO, TINY, patience, run_script, write_shakespeare

MAX_OUTPUTS, MAX_NEW_TOKENS = 8, 1000  # app.py's limits


def require(module: str):
    """Import an optional dependency from requirements-app.txt: skip without it, but fail in CI, which installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"{module} is not installed: pip install -r requirements-app.txt")


def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A char-level model trained for a few seconds on 100,000 characters of Shakespeare, once per test session."""
    folder = tmp_path_factory.getbasetemp() / "tiny_model"
    if not (folder / "trained_model.pth").exists():
        write_shakespeare(folder)
        result = run_script("gpt.py", [*TINY, "--max_iters=100", "--eval_interval=50", "--max_new_tokens=10"], folder)
        assert result.returncode == 0, result.stderr
    return folder / "trained_model.pth"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(checkpoint: Path, timeout: float = 120) -> Iterator[str]:
    """Run `python app.py --model_file=... --port=...` until the page answers (within patience(timeout) seconds);
    yield its URL, then stop it."""
    port = free_port()
    log_path = checkpoint.parent / f"app-{port}.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), f"--model_file={checkpoint}", f"--port={port}"],
            cwd=checkpoint.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            # one thread: a tiny model gains nothing from more, and on a busy 2-core machine torch's
            # threads wait for each other so much that generating can get 100 times slower
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        waited = patience(timeout)
        deadline = time.monotonic() + waited
        while True:
            assert server.poll() is None, f"app.py exited early:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"app.py did not answer within {waited:.0f} s:\n{log_path.read_text()}"
            try:
                urllib.request.urlopen(url, timeout=patience(5)).close()
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=patience(10))
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    """A gradio_client connected to app.py serving a tiny model."""
    require("gradio")
    gradio_client = require("gradio_client")
    with serve_app(tiny_checkpoint(tmp_path_factory)) as url:
        yield gradio_client.Client(url, verbose=False)


def generate(
    client, prompt: str, max_new_tokens=20, num_outputs=2, temperature=0.8, top_k=0, seed=1337, top_p=1.0
) -> tuple:
    """Generate as a script does: the status line, and the texts."""
    settings = (max_new_tokens, num_outputs, temperature, top_k, seed, top_p)
    status, texts = client.predict(prompt, *settings, api_name="/generate")
    return status, texts


@pytest.mark.smoke
def test_a_prompt_gives_the_requested_number_of_texts_each_starting_with_it(client):
    status, texts = generate(client, "ROMEO:", max_new_tokens=20, num_outputs=3)
    assert len(texts) == 3
    assert all(text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 20 for text in texts), texts
    assert status.startswith("Done")


def test_a_script_that_asks_for_two_texts_gets_two(client):
    status, texts = client.predict("ROMEO:", 20, 2, 0.8, 0, 1337, api_name="/generate")
    assert status.startswith("Done")
    assert len(texts) == 2 and all(text.startswith("ROMEO:") and len(text) > len("ROMEO:") for text in texts), texts


def test_an_unreadable_prompt_shows_a_message_and_the_server_keeps_answering(client):
    status, texts = generate(client, "日本")
    assert "日本" in status and "lacks" in status
    assert texts == []
    _, texts = generate(client, "KING:")
    assert len(texts) == 2 and texts[0].startswith("KING:")


def test_out_of_range_settings_are_clamped_on_the_server(client):
    status, texts = generate(
        client, "A", max_new_tokens=100_000, num_outputs=50, temperature=99, top_k=10**9, seed=-5, top_p=-1
    )
    assert len(texts) == MAX_OUTPUTS
    assert all(len(text) == len("A") + MAX_NEW_TOKENS for text in texts)  # a char model: one token, one character
    assert "temperature 2" in status and "top-p 0.01" in status


def test_a_too_long_prompt_is_refused_with_a_message(client):
    status, texts = generate(client, "a" * 2001)
    assert "2,000" in status
    assert texts == []


def test_settings_that_are_not_numbers_fall_back_to_the_smallest(client):
    status, texts = generate(client, "ROMEO:", max_new_tokens=None, num_outputs="many", temperature=None)
    assert len(texts) == 1 and texts[0].startswith("ROMEO:") and len(texts[0]) == len("ROMEO:") + 1
    assert "temperature 0" in status


@pytest.mark.parametrize("temperature", [1e-40, 5e-324])
def test_a_temperature_too_small_to_divide_by_writes_as_temperature_0(client, temperature):
    _, greedy = generate(client, "ROMEO:", max_new_tokens=30, num_outputs=1, temperature=0)
    status, texts = generate(client, "ROMEO:", max_new_tokens=30, num_outputs=1, temperature=temperature)
    assert texts == greedy and "temperature 0," in status


def test_numbers_too_big_for_a_float_are_clamped_like_any_other(client):
    huge = 10**400  # an int float() cannot hold; a string of 5,000 digits reads as infinity
    status, texts = generate(
        client, "A", max_new_tokens=20, num_outputs=huge, temperature="9" * 5000, top_k=-huge, seed=huge, top_p=huge
    )
    assert len(texts) == MAX_OUTPUTS
    assert "temperature 2, top-k off, top-p 1, seed 2147483647" in status


def test_top_p_this_small_keeps_only_the_likeliest_token_whatever_the_seed(client):
    _, greedy = generate(client, "ROMEO:", max_new_tokens=30, num_outputs=1, temperature=0)
    for seed in (1, 2):
        status, texts = generate(
            client, "ROMEO:", max_new_tokens=30, num_outputs=2, temperature=1.0, seed=seed, top_p=0.01
        )
        assert texts == greedy * 2
        assert "top-p 0.01" in status


def test_the_page_streams_the_prompt_first_then_the_text(client):
    # six settings, as scripts sent them before the page had top-p: it is the last, and defaults to 1 (off)
    job = client.submit("ROMEO:", 50, 1, 0.8, 0, 1337, api_name="/generate")
    final = job.result(timeout=patience(120))
    updates = job.outputs()
    assert updates[0][1] == ["ROMEO:"]  # the first update, before any new token
    assert len(final[1][0]) == len("ROMEO:") + 50


def test_several_users_at_once_are_queued_not_dropped(client):
    jobs = [client.submit(f"{name}:", 30, 2, 0.8, 0, 1337, api_name="/generate") for name in ("ROMEO", "KING", "DUKE")]
    for job, name in zip(jobs, ("ROMEO", "KING", "DUKE")):
        status, (first, second) = job.result(timeout=patience(120))
        assert status.startswith("Done") and first.startswith(f"{name}:") and second.startswith(f"{name}:")


def test_without_a_checkpoint_app_says_how_to_make_one(tmp_path):
    require("gradio")
    result = run_script("app.py", [], tmp_path)
    assert result.returncode != 0
    assert "python gpt.py" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_huge_request_is_refused_before_it_is_read_and_the_page_keeps_answering(tmp_path_factory):
    require("gradio")
    with serve_app(tiny_checkpoint(tmp_path_factory)) as url:
        # the headers announce 50 MB (against a 2,000-character prompt); the answer comes before any of it
        host, port = url.removeprefix("http://").strip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=patience(30))
        connection.putrequest("POST", "/gradio_api/call/generate")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(50_000_000))
        connection.endheaders()
        assert connection.getresponse().status == 413
        connection.close()
        urllib.request.urlopen(url, timeout=patience(30)).close()  # still serving


@pytest.mark.parametrize("port", ["99999", "0", "-5"])
def test_a_port_out_of_range_gets_one_line(tmp_path, port):
    result = run_script("app.py", [f"--port={port}"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: --port must be from 1 to 65535, not {port}"


def test_without_gradio_app_says_how_to_install_it(tmp_path):
    # a fake gradio.py that fails to import, found before the real one: as on a machine without gradio
    (tmp_path / "gradio.py").write_text("raise ImportError('no gradio here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    app = str(REPO / "app.py")
    result = subprocess.run(
        [sys.executable, app], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=patience(120)
    )
    assert result.returncode != 0
    assert result.stderr.strip() == "app.py needs gradio: pip install -r requirements-app.txt"
