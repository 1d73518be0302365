"""`transferkit serve`: the real server on loopback, spoken to over HTTP — the same answers as the folder gives
in Python, micro-batched under concurrent load, and a one-line 4xx for every kind of bad input, after which it
still serves."""

import base64
import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from transferkit.model import load_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    procs = []

    def _start(folder, *extra):
        port = _free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "serve", str(folder), "--port", str(port),
                                 "--device", "cpu", *extra], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the server did not come up in 120 s")

    yield _start
    for p in procs:
        p.terminate()
        p.wait(timeout=30)


@pytest.fixture(scope="module")
def text_server(start, models):
    return start(models["probe"])


@pytest.fixture(scope="module")
def image_server(start, models):
    return start(models["finetune"])


def test_health_and_metadata(text_server, models):
    assert httpx.get(f"{text_server}/health").json()["status"] == "ok"
    meta = httpx.get(f"{text_server}/metadata").json()
    info = load_model(models["probe"]).info
    assert meta["kind"] == "probe" and meta["classes"] == info.class_names and meta["outputs"] == "probabilities"
    assert meta["metrics"] == info.metrics and meta["backbone"] == "st:all-MiniLM-L6-v2"


def test_text_predictions_are_the_folders_answers(text_server, models, items_for):
    texts, _ = items_for("probe")
    ref = load_model(models["probe"]).outputs(texts)
    r = httpx.post(f"{text_server}/predict", json={"texts": texts}, timeout=60)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    classes = load_model(models["probe"]).class_names
    got = np.array([[p["probabilities"][c] for c in classes] for p in preds])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert [p["label"] for p in preds] == [classes[i] for i in ref.argmax(1)]
    one = httpx.post(f"{text_server}/predict", json={"text": texts[0]}).json()["predictions"]
    assert len(one) == 1 and one[0]["label"] == preds[0]["label"]


def test_images_as_base64_and_as_multipart_files(image_server, models, items_for):
    paths, _ = items_for("finetune")
    paths = paths[:6]
    ref = load_model(models["finetune"]).outputs(paths)
    b64 = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    r = httpx.post(f"{image_server}/predict", json={"images": b64}, timeout=60)
    assert r.status_code == 200, r.text
    classes = load_model(models["finetune"]).class_names
    got = np.array([[p["probabilities"][c] for c in classes] for p in r.json()["predictions"]])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    r = httpx.post(f"{image_server}/predict", files=files, timeout=60)
    assert r.status_code == 200, r.text
    assert [p["label"] for p in r.json()["predictions"]] == [classes[i] for i in ref.argmax(1)]


@pytest.mark.parametrize("body,status,words", [
    ({"texts": "not a list"}, 400, '"texts" must be a list'),
    ({"texts": ["fine", 3]}, 400, "texts[1] is int, not a string"),
    ({"texts": ["fine", "   "]}, 400, "texts[1] is empty"),
    ({"texts": []}, 400, "is empty"),
    ({"images": ["abc"]}, 400, "this model reads text"),
    (["a", "list"], 400, "JSON object"),
    ({"texts": ["x"] * 257}, 400, "at most 256"),
])
def test_bad_text_requests_get_a_one_line_4xx(text_server, body, status, words):
    r = httpx.post(f"{text_server}/predict", json=body)
    assert r.status_code == status and words in r.json()["error"] and "\n" not in r.json()["error"], r.text
    assert httpx.post(f"{text_server}/predict", json={"text": "still serving"}).status_code == 200


def test_bad_image_requests_and_non_json_bodies(image_server):
    for kwargs, words in (({"json": {"images": ["!!not base64!!"]}}, "not valid base64"),
                          ({"json": {"image": base64.b64encode(b"GIF89a but truncated").decode()}},
                           "not a readable image"),
                          ({"content": b"{broken json", "headers": {"content-type": "application/json"}},
                           "not JSON"),
                          ({"files": [("files", ("x.png", b"\x89PNG lies", "image/png"))]}, "not a readable image"),
                          ({"data": {"text": "no files"}, "files": []}, "the body is not JSON")):
        r = httpx.post(f"{image_server}/predict", **kwargs)
        assert 400 <= r.status_code < 500 and words in r.json()["error"], (kwargs, r.status_code, r.text)
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(buf, "PNG")
    ok = httpx.post(f"{image_server}/predict", json={"image": base64.b64encode(buf.getvalue()).decode()})
    assert ok.status_code == 200, ok.text


def test_an_oversized_body_gets_413_and_the_server_survives(start, models):
    url = start(models["probe"], "--max-body-mb", "0.01")
    r = httpx.post(f"{url}/predict", json={"texts": ["x" * 20_000]})
    assert r.status_code == 413 and "request body over" in r.json()["error"]
    chunked = httpx.post(f"{url}/predict", content=iter([b'{"texts": ["' + b"y" * 6000, b"y" * 6000 + b'"]}']),
                         headers={"content-type": "application/json"})  # no Content-Length: counted as it comes
    assert chunked.status_code == 413
    assert httpx.post(f"{url}/predict", json={"text": "small"}).status_code == 200


def test_concurrent_requests_are_micro_batched_and_all_answered(text_server, models):
    texts = [f"review number {i}: {'great' if i % 2 else 'awful'} stuff" for i in range(32)]
    ref = load_model(models["probe"]).predict(texts)
    classes = load_model(models["probe"]).class_names
    before = httpx.get(f"{text_server}/health").json()
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: client.post(f"{text_server}/predict", json={"text": t}), texts))
    assert all(a.status_code == 200 for a in answers)
    assert [a.json()["predictions"][0]["label"] for a in answers] == [classes[i] for i in ref]
    after = httpx.get(f"{text_server}/health").json()
    assert after["items"] - before["items"] == 32
    assert after["batches"] - before["batches"] < 32  # several requests shared a model batch


def test_a_decompression_bomb_is_refused_before_it_is_decoded(image_server):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, "PNG")  # a few kB on the wire, 48 megapixels in memory
    assert len(buf.getvalue()) < 200_000
    r = httpx.post(f"{image_server}/predict", json={"image": base64.b64encode(buf.getvalue()).decode()})
    assert r.status_code == 400 and "8000×6000 pixels" in r.json()["error"]


def test_the_batcher_fails_only_the_bad_request_and_survives_stop_and_start():
    import asyncio

    from transferkit.serve.batcher import MicroBatcher

    def predict(items):
        if any(i < 0 for i in items):
            raise ValueError("negative item")
        return np.asarray(items, float) * 2

    async def scenario():
        b = MicroBatcher(predict, max_batch=8, max_wait_ms=50)
        b.start()
        good, bad, other = await asyncio.gather(b.submit([1, 2]), b.submit([-1]), b.submit([3]),
                                                return_exceptions=True)
        assert list(good) == [2, 4] and isinstance(bad, ValueError) and list(other) == [6]
        await b.stop()
        b.start()  # a second lifespan on the same app
        again = await b.submit([5])
        await b.stop()
        return list(again)

    assert asyncio.run(scenario()) == [10]
