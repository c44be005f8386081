#!/usr/bin/env python3
"""Soak and churn test of a real `jetserve serve` on 127.0.0.1, bounded in time and requests.

Many concurrent clients, over gRPC and HTTP, with random prompt lengths and output lengths, and
random behaviours: read to the end, cancel after a few tokens, a short deadline, a slow reader,
an HTTP stream dropped half-way, n > 1. Afterwards the server must be idle with every state
slot, ring and KV page back (a leak would show), RSS must not have grown by more than 100 MB
after warm-up, thread and file-descriptor counts must be flat, every status must be one of the
expected ones, and greedy requests must have produced exactly the tokens they give alone.

  python3 tests/soak/soak.py --duration 20 --requests 400   # the CI version (CTest: soak_short)
  python3 tests/soak/soak.py --duration 1800 --requests 200000 --concurrency 64   # the long one

Prints a JSON report on stdout; exits 1 when a check fails.
"""
import argparse
import http.client
import json
import os
import random
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))

import grpc  # noqa: E402

from harness import Server, generate, pb, request  # noqa: E402

EXPECTED = {"OK", "CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}


def proc_stats(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    rss_kb = int(fields["VmRSS"].split()[0])
    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mb": rss_kb / 1024.0, "threads": threads, "fds": fds}


class Soak:
    def __init__(self, args, server):
        self.args = args
        self.server = server
        self.lock = threading.Lock()
        self.statuses = {}
        self.behaviours = {}
        self.errors = []
        self.started = 0
        self.tokens = 0
        self.deadline = time.monotonic() + args.duration
        # Greedy references: a few prompts whose tokens must never change under load.
        rng = random.Random(args.seed)
        self.references = []
        for _ in range(4):
            prompt = [rng.randrange(1, 256) for _ in range(rng.randrange(3, 60))]
            tokens = generate(server.stub, request(ids=prompt, max_tokens=12,
                                                   ignore_eos=True)).token_ids
            self.references.append((prompt, tokens))

    def count(self, behaviour, status):
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.behaviours[behaviour] = self.behaviours.get(behaviour, 0) + 1
            if status not in EXPECTED:
                self.errors.append(f"{behaviour}: unexpected status {status}")

    def take_ticket(self):
        with self.lock:
            if self.started >= self.args.requests or time.monotonic() > self.deadline:
                return None
            self.started += 1
            return self.started

    def grpc_request(self, rng, behaviour):
        prompt = [rng.randrange(1, 256) for _ in range(rng.randrange(1, 200))]
        req = request(ids=prompt, max_tokens=rng.randrange(1, 40), ignore_eos=True,
                      temperature=1.0, seed=rng.randrange(1 << 30))
        if behaviour == "parallel":
            req.sampling.n = rng.randrange(2, 4)
        timeout = rng.uniform(0.02, 0.3) if behaviour == "deadline" else 120
        stream = self.server.stub.Generate(req, timeout=timeout)
        try:
            for i, response in enumerate(stream):
                with self.lock:
                    self.tokens += len(response.token_ids)
                if behaviour == "cancel" and i >= rng.randrange(0, 4):
                    stream.cancel()
                    break
                if behaviour == "slow":
                    time.sleep(rng.uniform(0.005, 0.03))  # a reader slower than the engine
            if behaviour == "cancel":
                return "CANCELLED"
            return "OK"
        except grpc.RpcError as e:
            return e.code().name

    def greedy_check(self, rng):
        prompt, expected = self.references[rng.randrange(len(self.references))]
        try:
            got = generate(self.server.stub, request(ids=prompt, max_tokens=12,
                                                     ignore_eos=True)).token_ids
        except grpc.RpcError as e:
            return e.code().name
        if got != expected:
            with self.lock:
                self.errors.append(f"greedy tokens changed under load: {got} != {expected}")
        return "OK"

    def http_request(self, rng, drop):
        body = {"prompt": [rng.randrange(1, 256) for _ in range(rng.randrange(1, 100))],
                "max_tokens": rng.randrange(1, 30), "stream": True, "ignore_eos": True}
        conn = http.client.HTTPConnection("127.0.0.1", self.server.http_port, timeout=120)
        try:
            conn.request("POST", "/v1/completions", json.dumps(body),
                         {"Content-Type": "application/json"})
            res = conn.getresponse()
            if res.status == 429:
                res.read()
                return "RESOURCE_EXHAUSTED"
            if res.status != 200:
                return f"HTTP_{res.status}"
            events = 0
            done = False
            for line in res:
                if line.startswith(b"data: "):
                    events += 1
                    if line.strip() == b"data: [DONE]":
                        done = True
                        break
                    if drop and events >= 2:
                        return "CANCELLED"  # the client goes away; the server must notice
            return "OK" if done else "HTTP_TRUNCATED"
        finally:
            conn.close()

    def worker(self, index):
        rng = random.Random(self.args.seed * 1000 + index)
        behaviours = ["read", "cancel", "deadline", "slow", "parallel", "greedy", "http",
                      "http_drop"]
        while self.take_ticket() is not None:
            behaviour = rng.choice(behaviours)
            if behaviour == "greedy":
                status = self.greedy_check(rng)
            elif behaviour.startswith("http"):
                status = self.http_request(rng, drop=behaviour == "http_drop")
            else:
                status = self.grpc_request(rng, behaviour)
            self.count(behaviour, status)

    def run(self, concurrency):
        threads = [threading.Thread(target=self.worker, args=(i,)) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds at most")
    parser.add_argument("--requests", type=int, default=400, help="requests at most")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=60, help="requests before the baseline")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    server = Server("--max-seqs", "8", "--max-queue", "24", "--max-batch-tokens", "256",
                    name="soak")
    report = {"args": vars(args)}
    failures = []
    try:
        pid = server.proc.pid
        # Warm-up: pools, caches, thread pools and allocator arenas reach their working size.
        warm = Soak(argparse.Namespace(**{**vars(args), "requests": args.warmup,
                                          "duration": args.duration}), server)
        warm.run(args.concurrency)
        server.wait_idle()
        baseline = proc_stats(pid)
        start = time.monotonic()
        soak = Soak(args, server)
        soak.run(args.concurrency)
        elapsed = time.monotonic() - start
        server.wait_idle()  # every pool back to zero, nothing running or waiting
        end = proc_stats(pid)
        report.update({
            "requests": soak.started, "seconds": round(elapsed, 2), "tokens": soak.tokens,
            "statuses": soak.statuses, "behaviours": soak.behaviours,
            "baseline": baseline, "end": end,
            "rss_growth_mb": round(end["rss_mb"] - baseline["rss_mb"], 1),
        })
        failures += warm.errors + soak.errors
        if end["rss_mb"] - baseline["rss_mb"] > 100:
            failures.append(f"RSS grew by {end['rss_mb'] - baseline['rss_mb']:.1f} MB")
        # gRPC's and httplib's pools may settle a little above the warm-up's level; a leak of
        # one per request would be hundreds.
        if end["threads"] > baseline["threads"] + 8:
            failures.append(f"threads grew from {baseline['threads']} to {end['threads']}")
        if end["fds"] > baseline["fds"] + 8:
            failures.append(f"file descriptors grew from {baseline['fds']} to {end['fds']}")
        if soak.started == 0:
            failures.append("no request ran")
        # The server still answers normally.
        done = generate(server.stub, request(ids=[1, 2, 3], max_tokens=2))
        if len(done.token_ids) != 2:
            failures.append("the server no longer completes requests")
    finally:
        server.close()
    report["failures"] = failures
    print(json.dumps(report, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
