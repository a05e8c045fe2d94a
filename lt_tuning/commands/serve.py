"""``lt-tuning serve --model PATH``: a trained classifier over HTTP (LitServe), on 127.0.0.1 by default."""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys


def main(args: list[str]) -> None:
    """Serve ``--model`` until stopped (Ctrl+C or SIGTERM)."""
    parser = argparse.ArgumentParser(
        prog="lt-tuning serve", description="Serve a trained classifier over HTTP: POST /predict "
        '{"texts": [...], "top_k": 3}, GET /info, GET /health. Concurrent requests are batched.')
    parser.add_argument("--model", required=True, help="a checkpoint of `lt-tuning fit` or a folder of `lt-tuning "
                        "export` (an ONNX folder serves without torch)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max_batch_size", type=int, default=32, help="requests classified together, at most")
    parser.add_argument("--batch_timeout", type=float, default=0.01, help="seconds a request waits for others")
    parser.add_argument("--workers", type=int, default=1, help="model processes; CPU threads are shared among them")
    parser.add_argument("--max_texts", type=int, default=256, help="texts in one request, at most (more: 413)")
    parser.add_argument("--max_chars", type=int, default=100_000, help="characters in one text, at most (more: 413)")
    parser.add_argument("--device", help="e.g. cpu, cuda (default: cuda when torch sees one, else cpu; ONNX: cpu)")
    options = parser.parse_args(args)
    for name in ("max_batch_size", "workers", "max_texts", "max_chars"):
        if getattr(options, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(options, name)}.")
    from lt_tuning.serve import build_server

    server = build_server(options.model, options.max_batch_size, options.batch_timeout, options.workers,
                          options.max_texts, options.max_chars, options.device)
    signal.signal(signal.SIGTERM, functools.partial(_interrupt, os.getpid()))  # LitServe stops its workers on Ctrl+C only
    server.run(host=options.host, port=options.port, generate_client_file=False, log_level="warning")


def _interrupt(main_pid: int, signum: int, frame: object) -> None:
    """SIGTERM (a container's or a service manager's stop) as Ctrl+C in the main process: LitServe
    then shuts down its API server and inference workers instead of leaving them running. A forked
    API server inherits this handler (uvicorn calls it after its own graceful stop): it just exits."""
    if os.getpid() != main_pid:
        sys.exit(0)
    raise KeyboardInterrupt
