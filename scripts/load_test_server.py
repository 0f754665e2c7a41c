"""Bounded loopback load test of ``mindglm-image serve``: N concurrent clients, a fixed number of requests
and a time limit. Every request must be answered (200, or an explicit 429/503); none may be lost. Reports
latency percentiles (first attempt to final answer) and images/min; clients retry a 429 after its Retry-After
while time is left (``--no-retry``: record it). Then it checks that a client which disconnects while queued
frees its slot.

    .venv/bin/python scripts/load_test_server.py --clients 8 --requests 48

Without ``--model`` it writes the tiny random model to a temporary folder (CPU figures of the serving path,
not of the real model). Exit status 1 if a request was lost or the disconnect check failed.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mindglm_image.serving.child_server import ChildServer, read_response
from mindglm_image.tiny_model import make_tiny_model

GEN = "/v1/images/generations"
STAGES = ("ar", "denoise", "decode", "total")  # the server's per-batch stage timers (mindglm_stage_seconds)


def run_clients(server: ChildServer, args, count: int, seed0: int) -> tuple[list[tuple[int, float]], list[str], int, float]:
    """``count`` requests from ``args.clients`` threads: ([(final status, seconds)], [lost request errors],
    429 retries, wall s)."""
    results: list[tuple[int, float]] = []
    lost: list[str] = []
    retries = [0]
    lock = threading.Lock()
    issued = iter(range(count))
    deadline = time.monotonic() + args.time_limit

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                index = next(issued, None)
            if index is None:
                return
            body = {"prompt": f"load test {index}", "size": args.size, "num_inference_steps": args.steps,
                    "seed": seed0 + index}
            start = time.monotonic()
            while True:  # a 429 is retried after its Retry-After while time is left; its answer is recorded
                try:
                    status, headers, _ = server.request("POST", GEN, body, timeout=max(1.0, deadline - time.monotonic()))
                except OSError as err:
                    with lock:
                        lost.append(f"request {index}: {err!r}")
                    break
                retry = float(headers.get("retry-after", 0)) if status == 429 and args.retry else None
                if retry is None or time.monotonic() + retry > deadline:
                    with lock:
                        results.append((status, time.monotonic() - start))
                    break
                with lock:
                    retries[0] += 1
                time.sleep(retry)

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, lost, retries[0], time.monotonic() - start


def disconnect_frees_slot(server: ChildServer, args) -> bool:
    """Busy worker + full queue -> 429; a queued client hangs up -> its slot is free for the next request."""
    busy = server.open_generation({"prompt": "busy", "size": args.size, "num_inference_steps": args.busy_steps})
    server.wait_metric("mindglm_running_requests", 1)
    queued = [server.open_generation({"prompt": f"queued {i}", "size": args.size, "num_inference_steps": args.steps + i})
              for i in range(args.queue_size)]  # distinct keys: one batch each
    server.wait_metric("mindglm_queue_depth", args.queue_size)
    full = server.request("POST", GEN, {"prompt": "one too many", "size": args.size})[0]
    queued.pop().close()
    server.wait_metric("mindglm_queue_depth", args.queue_size - 1)
    late = server.open_generation({"prompt": "took the freed slot", "size": args.size, "num_inference_steps": args.steps})
    statuses = [read_response(s)[0] for s in (busy, *queued, late)]
    dropped = server.metric("mindglm_requests_dropped_total", 'reason="disconnect"')
    print(f"disconnect check: full queue -> {full}; after one queued client hung up the next request -> {statuses[-1]}; "
          f"others {statuses[:-1]}; dropped for disconnect: {dropped:.0f}")
    return full == 429 and dropped == 1 and all(s == 200 for s in statuses)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: a tiny random one)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=48, help="requests of the measured phase")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds for the measured phase")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--busy-steps", type=int, default=100, help="steps of the request that keeps the worker busy")
    parser.add_argument("--queue-size", type=int, default=4)
    parser.add_argument("--max-batch-images", type=int, default=4)
    parser.add_argument("--no-retry", dest="retry", action="store_false", help="record a 429 instead of retrying it")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mindglm-load-") as tmp:
        model = args.model or str(make_tiny_model(Path(tmp) / "tiny", progress=False))
        side = max(int(s) for s in args.size.split("x"))
        server = ChildServer(["--model", model, "--output-dir", str(Path(tmp) / "out"), "--queue-size",
                              str(args.queue_size), "--max-batch-images", str(args.max_batch_images),
                              "--min-side", "32", "--max-side", str(max(side, 32)), "--default-size", args.size,
                              "--warmup", "--log-level", "warning"])
        started = time.monotonic()
        try:
            server.wait_ready(timeout=args.time_limit)
            print(f"server ready (every batch size compiled by --warmup) in {time.monotonic() - started:.1f} s")
            names = [("mindglm_batch_images_sum", ""), ("mindglm_batch_images_count", "")]
            names += [("mindglm_stage_seconds_sum", f'stage="{stage}"') for stage in STAGES]
            before = [server.metric(*name) for name in names]
            results, lost, retries, wall = run_clients(server, args, args.requests, 0)
            delta = [server.metric(*name) - b for name, b in zip(names, before)]
            freed = disconnect_frees_slot(server, args)
        finally:
            code = server.stop()
    statuses = {str(s): sum(1 for r in results if r[0] == s) for s in sorted({r[0] for r in results})}
    ok = np.array([t for s, t in results if s == 200])
    figures = {
        "clients": args.clients, "requests": args.requests, "answered": len(results), "lost": len(lost),
        "statuses": statuses, "retried_429": retries, "wall_s": round(wall, 2),
        "latency_s": {f"p{p}": round(float(np.percentile(ok, p)), 3) for p in (50, 90, 99)} if ok.size else {},
        "images_per_min": round(60 * ok.size / wall, 1), "mean_batch_images": round(delta[0] / max(delta[1], 1), 2),
        "server_seconds_per_batch": {stage: round(v / max(delta[1], 1), 2) for stage, v in zip(STAGES, delta[2:])},
        "disconnect_frees_slot": freed, "server_exit": code,
    }
    print(json.dumps(figures, indent=2))
    for line in lost:
        print(f"LOST {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    unexplained = set(statuses) - {"200", "429", "503"}
    answered_all = len(results) == args.requests and not lost and not unexplained
    return 0 if answered_all and freed else 1


if __name__ == "__main__":
    raise SystemExit(main())
