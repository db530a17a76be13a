#!/usr/bin/env python3
"""Upload benchmark: a large tus upload through reelhouse vs a raw HTTP PUT of the
same bytes to the same storage (the presigned/signed PUT URL of a ticket), in the
same run, alternating, median of N. Also samples the server's RSS during the tus
uploads and reports the peak growth over its idle RSS.

Usage: scripts/bench-upload.py [--binary target/release/reelhouse] [--size-mib 1024]
                               [--runs 3] [--chunk-mib 32] [--out docs/bench]
Embedded mode (SQLite, local disk) in a temporary data dir. Prints a table and
writes upload.md / upload.json under --out. A benchmark, not a test: nothing is
asserted.
"""
import argparse
import base64
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import free_port  # noqa: E402

BLOCK = os.urandom(1024 * 1024)  # the same pseudo-random MiB repeated: incompressible enough


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.05)


def gql(base, token, query, variables=None):
    conn = http.client.HTTPConnection(base.hostname, base.port, timeout=120)
    body = json.dumps({"query": query, "variables": variables or {}})
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request("POST", "/graphql", body, headers)
    answer = json.loads(conn.getresponse().read())
    if answer.get("errors"):
        raise RuntimeError(answer["errors"])
    return answer["data"]


def stream_body(conn, total):
    sent = 0
    while sent < total:
        n = min(len(BLOCK), total - sent)
        conn.send(BLOCK[:n])
        sent += n


def raw_put(url, total):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    path = u.path + ("?" + u.query if u.query else "")
    start = time.perf_counter()
    conn.putrequest("PUT", path)
    conn.putheader("content-type", "video/mp4")
    conn.putheader("content-length", str(total))
    conn.endheaders()
    stream_body(conn, total)
    status = conn.getresponse().status
    elapsed = time.perf_counter() - start
    if status // 100 != 2:
        raise RuntimeError(f"raw PUT answered {status}")
    return elapsed


def tus_upload(base, token, video_id, total, chunk):
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    conn = http.client.HTTPConnection(base.hostname, base.port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/uploads/", headers={
        "authorization": f"Bearer {token}", "tus-resumable": "1.0.0", "upload-length": str(total),
        "upload-metadata": f"videoId {b64(video_id)},filename {b64('bench.mp4')},filetype {b64('video/mp4')}",
    })
    res = conn.getresponse()
    res.read()
    if res.status != 201:
        raise RuntimeError(f"tus POST answered {res.status}")
    location = urllib.parse.urlsplit(res.getheader("location")).path
    offset = 0
    while offset < total:
        n = min(chunk, total - offset)
        conn.putrequest("PATCH", location)
        for k, v in {"authorization": f"Bearer {token}", "tus-resumable": "1.0.0",
                     "content-type": "application/offset+octet-stream",
                     "upload-offset": str(offset), "content-length": str(n)}.items():
            conn.putheader(k, v)
        conn.endheaders()
        stream_body(conn, n)
        res = conn.getresponse()
        res.read()
        # The last PATCH completes the upload; random bytes are refused there (415),
        # after every byte was stored: that is still a full upload.
        if res.status not in (204, 415):
            raise RuntimeError(f"tus PATCH answered {res.status}")
        offset += n
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/reelhouse")
    ap.add_argument("--size-mib", type=int, default=int(os.environ.get("BENCH_UPLOAD_MIB", "1024")))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chunk-mib", type=int, default=32)
    ap.add_argument("--out", default="docs/bench")
    args = ap.parse_args()
    total = args.size_mib * 1024 * 1024
    data_dir = tempfile.mkdtemp(prefix="reelhouse-bench-upload-")
    port = free_port()
    env = dict(os.environ,
               REELHOUSE__UPLOADS__MULTIPART_THRESHOLD_BYTES=str(total * 2),
               REELHOUSE__RATE_LIMIT__ENABLED="false",
               REELHOUSE__AUTH__UNVERIFIED_CAN_UPLOAD="true",
               REELHOUSE__WORKERS__EMBEDDED="false",
               RUST_LOG="warn")
    server = subprocess.Popen([args.binary, "serve", "--bind", f"127.0.0.1:{port}", "--data-dir", data_dir],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = urllib.parse.urlsplit(f"http://127.0.0.1:{port}")
    try:
        for _ in range(200):
            try:
                http.client.HTTPConnection(base.hostname, base.port, timeout=1).request("GET", "/health")
                break
            except OSError:
                time.sleep(0.1)
        email = f"bench-{os.getpid()}@example.com"
        token = gql(base, None, "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }",
                    {"i": {"email": email, "password": "benchmark pass 9", "displayName": "Bench"}})["register"]["accessToken"]
        idle_kib = rss_kib(server.pid)
        put_times, tus_times, peaks = [], [], []
        for run in range(args.runs):
            for kind in ("put", "tus"):
                vid = gql(base, token, 'mutation { createVideo(input: {title: "bench"}) { id } }')["createVideo"]["id"]
                if kind == "put":
                    ticket = gql(base, token,
                                 "mutation($i: CreateUploadInput!) { createUpload(input: $i) { url method } }",
                                 {"i": {"videoId": vid, "filename": "bench.mp4", "contentType": "video/mp4", "size": total}})
                    assert ticket["createUpload"]["method"] == "PUT"
                    put_times.append(raw_put(ticket["createUpload"]["url"], total))
                else:
                    sampler = Sampler(server.pid)
                    sampler.start()
                    tus_times.append(tus_upload(base, token, vid, total, args.chunk_mib * 1024 * 1024))
                    sampler.running = False
                    sampler.join()
                    peaks.append(sampler.peak)
                # Free the disk between runs.
                gql(base, token, "mutation($id: ID!) { deleteVideo(id: $id) }", {"id": vid})
                print(f"run {run + 1} {kind}: {(put_times if kind == 'put' else tus_times)[-1]:.2f} s", file=sys.stderr)
        put_med, tus_med = statistics.median(put_times), statistics.median(tus_times)
        mib = total / (1024 * 1024)
        result = {
            "size_mib": args.size_mib, "runs": args.runs, "tus_chunk_mib": args.chunk_mib,
            "raw_put_seconds_median": put_med, "tus_seconds_median": tus_med,
            "raw_put_mib_s": mib / put_med, "tus_mib_s": mib / tus_med,
            "tus_throughput_ratio_vs_raw_put": put_med / tus_med,
            "server_idle_rss_mib": idle_kib / 1024,
            "tus_peak_rss_growth_mib": (max(peaks) - idle_kib) / 1024,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    table = (
        "| measure | value | target |\n| --- | --- | --- |\n"
        f"| raw signed PUT, median of {args.runs} | {result['raw_put_mib_s']:.0f} MiB/s ({put_med:.2f} s) | baseline |\n"
        f"| tus ({args.chunk_mib} MiB PATCHes), median of {args.runs} | {result['tus_mib_s']:.0f} MiB/s ({tus_med:.2f} s) | |\n"
        f"| tus / raw PUT throughput | **{result['tus_throughput_ratio_vs_raw_put']:.2f}x** | >= 0.80x |\n"
        f"| server peak RSS growth during tus | **{result['tus_peak_rss_growth_mib']:.1f} MiB** (idle {result['server_idle_rss_mib']:.0f} MiB) | <= 64 MiB |\n"
    )
    with open(os.path.join(args.out, "upload.md"), "w") as f:
        f.write(f"# Upload benchmark ({args.size_mib} MiB, embedded mode, local disk)\n\n{table}")
    with open(os.path.join(args.out, "upload.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(table)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
