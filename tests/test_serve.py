"""`lt-tuning serve` over real HTTP: one server process on a free localhost port for the module."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lt_tuning import load_classifier
from lt_tuning.inference import export_classifier

LIMITS = {"max_texts": 8, "max_chars": 300}


def call(url: str, body: bytes | dict | None = None) -> tuple[int, dict | str]:
    """``(status, JSON or text)`` of a GET (no body) or a JSON POST."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``, and theirs."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            found |= {child} | children(child)
    return found


@pytest.fixture(scope="module")
def server(saved, tmp_path_factory):
    """`lt-tuning serve` of the prompt-tuning variant's ONNX export, batching up to 4 requests."""
    folder = tmp_path_factory.mktemp("serve") / "onnx"
    export_classifier(saved["prompt_tuning"]["ckpt"], folder, format="onnx")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).with_name("lt-tuning")), "serve", "--model", str(folder), "--port", str(port),
               "--max_batch_size", "4", "--batch_timeout", "0.2", "--workers", "1",
               *[f"--{name}={value}" for name, value in LIMITS.items()]]
    log = open(folder.parent / "serve.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder.parent)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while call_ok(f"{url}/health") != "ok":
        assert process.poll() is None and time.monotonic() < deadline, (folder.parent / "serve.log").read_text()[-3000:]
        time.sleep(0.5)
    try:
        yield {"url": url, "process": process, "classifier": load_classifier(folder), "run": saved["prompt_tuning"],
               "log": folder.parent / "serve.log"}
        # After the module's tests, in whatever order they ran: SIGTERM stops the server and its workers cleanly.
        stop_with_sigterm(process, url, folder.parent / "serve.log")
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def stop_with_sigterm(process: subprocess.Popen, url: str, log: Path) -> None:
    workers = children(process.pid)
    assert workers  # LitServe's inference worker and API server processes
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    time.sleep(1)
    assert not {pid for pid in workers if Path(f"/proc/{pid}").exists() and
                Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}
    assert call_ok(f"{url}/health") is None
    assert process.returncode == 0 and "Traceback" not in log.read_text()


def call_ok(url: str) -> str | None:
    try:
        return call(url)[1]
    except OSError:
        return None


def test_predictions_equal_predict_proba(server):
    texts = server["run"]["texts"][:6]
    status, body = call(f"{server['url']}/predict", {"texts": texts, "top_k": 3})
    assert status == 200
    probs = server["classifier"].predict_proba(texts)
    labels = server["run"]["labels"]
    for row, p in zip(body["predictions"], probs, strict=True):
        top = np.argsort(-p)[:3]
        assert [entry["label"] for entry in row["top_k"]] == [labels[i] for i in top]
        assert [entry["probability"] for entry in row["top_k"]] == pytest.approx(p[top].tolist(), abs=1e-6)
        assert (row["label"], row["probability"]) == (row["top_k"][0]["label"], row["top_k"][0]["probability"])
    served = np.array([row["probability"] for row in body["predictions"]])
    assert np.abs(served - server["run"]["probs"][:6].max(dim=-1).values.numpy()).max() < 1e-5  # PyTorch's too
    status, info = call(f"{server['url']}/info")
    assert status == 200 and info["model"]["labels"] == labels and info["model"]["format"] == "onnx"
    assert info["model"]["text_fields"] == ["text"] and info["model"]["lt_tuning_version"]
    assert call(f"{server['url']}/health") == (200, "ok")


@pytest.mark.parametrize("body, status, message", [
    (b'{"texts": ["a"', 422, "JSON decode error"),
    ({"top_k": 2}, 422, "Field required"),
    ({"texts": "头痛怎么办"}, 422, "valid list"),
    ({"texts": ["头痛", 3]}, 422, "valid string"),
    ({"texts": []}, 422, "texts is empty"),
    ({"texts": ["头痛"] * (LIMITS["max_texts"] + 1)}, 413, "at most 8 (--max_texts)"),
    ({"texts": ["头痛", "痛" * (LIMITS["max_chars"] + 1)]}, 413, "texts[1] is longer than 300 characters"),
    ({"texts": [["头痛", "怎么办"]]}, 422, "each text of this model is a string"),
    ({"texts": ["头痛"], "top_k": 0}, 422, "greater than or equal to 1"),
])
def test_a_bad_request_gets_a_4xx_and_the_worker_serves_on(server, body, status, message):
    got, detail = call(f"{server['url']}/predict", body)
    assert got == status and message in json.dumps(detail, ensure_ascii=False)
    assert call(f"{server['url']}/predict", {"texts": ["头痛"]})[0] == 200


def test_concurrent_requests_are_batched_with_unbatched_results(server):
    """8 requests at once, batched 4 by 4 (texts of different lengths padded together), give
    what each text gives alone."""
    texts = server["run"]["texts"][:8]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda text: call(f"{server['url']}/predict", {"texts": [text], "top_k": 36}), texts))
    alone = server["classifier"].predict_proba(texts, batch_size=1)
    labels = server["run"]["labels"]
    for (status, body), p in zip(answers, alone, strict=True):
        assert status == 200
        served = {entry["label"]: entry["probability"] for entry in body["predictions"][0]["top_k"]}
        assert np.abs(np.array([served[label] for label in labels]) - p).max() < 1e-6
