"""Benchmark 9: `lt-tuning serve` under a bounded load, on localhost only.

A trained CMID checkpoint (``--ckpt``) exported to ONNX (fp32) is served by ``lt-tuning serve`` on a
free 127.0.0.1 port; ``--requests`` POST /predict requests of one CMID test text each are sent by
``--concurrency`` client threads, and the run stops by itself when they are answered. Figures:
latency p50/p99, requests/s against the examples/s of in-process ``predict_proba`` on the same
texts (batch 32, measured before and after the load, mean; goal >= 0.7x), errors (goal 0), and
the resident memory of the server's processes before and after.

    python benchmarks/bench_serve.py --ckpt CKPT        # about 1-2 minutes here
"""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common as C

NAME = "serve"
GOAL = 0.7


def post(url: str, texts: list[str]) -> tuple[int, float]:
    """(HTTP status, seconds) of one POST /predict."""
    request = urllib.request.Request(url, data=json.dumps({"texts": texts}).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = 0
    return status, time.perf_counter() - start


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, MiB."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    tree, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0
    for member in tree:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--ckpt", required=True, help="a trained CMID checkpoint (exported to ONNX here)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    args = parser.parse_args()
    started, env = C.start(args)

    from lt_tuning import export_classifier
    from lt_tuning.data.reading import read_labelled_file
    from lt_tuning.onnx_runtime import OnnxClassifier

    texts = read_labelled_file(args.data_dir / "cmid" / "test.tsv", ["text"], None, None)["text_a"]
    texts = [texts[i % len(texts)] for i in range(args.requests)]
    with C.workdir() as work:
        folder = work / "onnx"
        export_classifier(args.ckpt, folder, format="onnx")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [str(Path(sys.executable).with_name("lt-tuning")), "serve", "--model", str(folder), "--port",
                   str(port), "--max_batch_size", str(args.max_batch_size), "--batch_timeout", str(args.batch_timeout)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while post(f"{url}/predict", ["头痛"])[0] != 200:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("lt-tuning serve did not start")
                time.sleep(0.5)
            rss_before = tree_rss_mib(server.pid)

            classifier = OnnxClassifier.load(folder)
            in_process = []

            def baseline() -> None:
                start = time.perf_counter()
                classifier.predict_proba(texts, 32)
                in_process.append(len(texts) / (time.perf_counter() - start))

            baseline()
            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                answers = list(pool.map(lambda text: post(f"{url}/predict", [text]), texts))
            wall = time.perf_counter() - start
            baseline()
            rss_after = tree_rss_mib(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    latencies = sorted(seconds for _, seconds in answers)
    errors = sum(status != 200 for status, _ in answers)
    throughput = len(answers) / wall
    baseline_rate = statistics.mean(in_process)
    ratio = throughput / baseline_rate
    p50, p99 = latencies[len(latencies) // 2], latencies[int(0.99 * (len(latencies) - 1))]
    rows = [[f"{args.requests} requests x 1 text, concurrency {args.concurrency}", f"{1000 * p50:.0f}",
             f"{1000 * p99:.0f}", f"{throughput:.0f}", f"{baseline_rate:.0f}", f"**{ratio:.2f}x** (goal >= {GOAL})",
             errors, f"{rss_before:.0f} -> {rss_after:.0f}"]]
    markdown = (
        f"### 10. Serving (`lt-tuning serve`, ONNX fp32 of {Path(args.ckpt).name}, --max_batch_size "
        f"{args.max_batch_size}, --batch_timeout {args.batch_timeout}, 1 worker, localhost)\n\n"
        + C.markdown_table(["load", "p50 ms", "p99 ms", "requests/s", "in-process examples/s", "ratio", "errors",
                            "server RSS MiB before -> after"], rows)
    )
    C.write_results(
        NAME, args, env, started, markdown,
        description="Bounded load test of lt-tuning serve on localhost: latency, throughput vs in-process "
        "predict_proba, errors, resident memory.",
        latency_ms={"p50": round(1000 * p50, 2), "p99": round(1000 * p99, 2), "max": round(1000 * latencies[-1], 2)},
        requests_per_second=round(throughput, 1), in_process_examples_per_second=[round(v, 1) for v in in_process],
        ratio=round(ratio, 3), goal=GOAL, errors=errors, rss_mib={"before": round(rss_before, 1),
                                                                 "after": round(rss_after, 1)},
        commit=subprocess.run(["git", "rev-parse", "HEAD"], cwd=C.ROOT, capture_output=True, text=True).stdout.strip(),
    )


if __name__ == "__main__":
    main()
