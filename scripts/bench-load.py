#!/usr/bin/env python3
"""Fan-out and API benchmarks, driven by the load harness (reelhouse-load) against an
embedded reelhouse and the bare baselines (reelhouse-baseline), all in the same run.

  fanout: M graphql-ws subscribers on one video; each event's publish (`at`, server
          clock) to the LAST subscriber's receipt, vs a raw Redis subscriber plus a
          bare actix WebSocket broadcast of the same bytes to M clients, and vs the peer
          a team would otherwise pick (Node.js: graphql-ws + graphql-redis-subscriptions,
          load-tests/peer-node, installed with npm ci; --no-peer skips it).
  api:    video(id) with a JWT vs a bare actix endpoint returning the same JSON bytes,
          same client: max rps (closed loop), p99 at half of reelhouse's max rps (open
          loop), and that half load again while uploads are encoding.

Usage: scripts/bench-load.py --what fanout|api --server-bin B --load-bin L --baseline-bin X
                             [--subscribers 100,1000,10000] [--seconds 20] [--out docs/bench]
Prints ratios against the in-run baselines; writes <what>.md, <what>.json and PNG charts
under --out. A benchmark, not a test: nothing is asserted.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import free_port  # noqa: E402


def wait_http(url, proc, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench-load: {what} exited early (status {proc.returncode})")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.2)
    sys.exit(f"bench-load: {what} did not answer {url}")


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {mem} MiB RAM, {platform.system()} {platform.release()}"


def plot(path, draw):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"bench-load: matplotlib missing; no {path} (pip install --user matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    draw(ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def run_load(args, extra):
    cmd = [args.load_bin, "--target", args.url, "--json", "--server-pid", str(args.server_pid)] + extra
    print("  $ " + " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout + out.stderr, file=sys.stderr)
        return None
    lines = out.stdout.strip().splitlines()
    print("\n".join("    " + l for l in lines[:-1]), file=sys.stderr)
    return json.loads(lines[-1])


def fmt(x, digits=1):
    return "—" if x is None else f"{x:.{digits}f}"


def psql(url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True, stdout=subprocess.DEVNULL)


def with_db(url, name):
    p = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(p._replace(path="/" + name))


def fanout_name(args):
    """Report file stem: `fanout`, or `fanout-two-instances`."""
    return "fanout-two-instances" if args.also_url else "fanout"


def peer_cells(f):
    """The peer's columns of a fan-out row (empty without a peer)."""
    pe = f.get("peer")
    if not pe:
        return " | | | | "
    return (f"{fmt(pe['last_client_ms'].get('p50'))} | {fmt(pe['last_client_ms'].get('p99'))} | "
            f"{fmt(f.get('peer_ratio_p50'), 2)}x | {fmt(f.get('peer_ratio_p99'), 2)}x | {pe.get('lost_events')}")


def start_peer(args, env, work, procs):
    """Install (npm ci, once) and start the Node.js peer of the fan-out benchmark; its URL."""
    peer_dir = os.path.join(ROOT, "load-tests", "peer-node")
    node = subprocess.run([os.path.join(ROOT, "scripts", "node.sh")], capture_output=True, text=True, check=True).stdout.strip()
    path_env = dict(env, PATH=os.path.dirname(node) + os.pathsep + env.get("PATH", ""))
    if not os.path.isdir(os.path.join(peer_dir, "node_modules")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=peer_dir, env=path_env, check=True)
    port = free_port()
    peer = subprocess.Popen([node, "server.mjs", "--port", str(port), "--redis-url", args.redis_url], cwd=peer_dir,
                            env=path_env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "peer.log"), "w"))
    procs.append(peer)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", peer, "the Node.js peer")
    return url


def bench_fanout(args):
    rows = []
    for n in [int(x) for x in args.subscribers.split(",") if x]:
        print(f"\n== fan-out, {n} subscribers", file=sys.stderr)
        extra = ["--peer", args.peer_url] if args.peer_url else []
        if args.also_url:
            extra += ["--also-target", args.also_url]
        r = run_load(args, ["--scenario", "fanout", "--users", "1", "--subscribers", str(n),
                            "--duration", f"{args.seconds}s", "--baseline", args.baseline_url,
                            "--redis-url", args.redis_url] + extra)
        if r is None:
            rows.append({"subscribers": n, "failed": True})
            continue
        f = r["fanout"]
        rows.append({"subscribers": n, "report": r})
        rh, bl = f["reelhouse"], f["baseline"] or {}
        print(f"  reelhouse last-client p50 {fmt(rh['last_client_ms']['p50'])} ms p99 {fmt(rh['last_client_ms']['p99'])} ms;"
              f" baseline p50 {fmt(bl.get('last_client_ms', {}).get('p50'))} ms p99 {fmt(bl.get('last_client_ms', {}).get('p99'))} ms;"
              f" ratio p50 {fmt(f['ratio_p50'], 2)}x p99 {fmt(f['ratio_p99'], 2)}x; lost {r['lost_events']}, errors {r['errors']}",
              file=sys.stderr)
        if f.get("peer"):
            pe = f["peer"]
            print(f"  peer (Node.js graphql-ws + graphql-redis-subscriptions) p50 {fmt(pe['last_client_ms']['p50'])} ms"
                  f" p99 {fmt(pe['last_client_ms']['p99'])} ms; reelhouse/peer p50 {fmt(f.get('peer_ratio_p50'), 2)}x"
                  f" p99 {fmt(f.get('peer_ratio_p99'), 2)}x; peer lost {pe['lost_events']}", file=sys.stderr)
    ok = [row for row in rows if not row.get("failed")]
    json.dump({"machine": machine(), "profile": args.profile, "seconds": args.seconds, "rows": rows},
              open(os.path.join(args.out, f"{fanout_name(args)}.json"), "w"), indent=2)
    lines = [
        "# Fan-out benchmark",
        "",
        f"Machine: {machine()}. Build: {args.profile}. Generated by `make bench` (`BENCH_ONLY=fanout`),",
        ("Two API processes (PostgreSQL + Redis), subscribers split between them; events start on the first. "
         if args.also_url else "One embedded API process (SQLite, in-process bus). "),
        f"{args.seconds} s of rounds per subscriber count; see docs/BENCHMARKS.md for the method.",
        "",
        "Publish→last subscriber per event, ms (p50 / p99 / max over the events of the run); ratio = reelhouse / baseline.",
        "The peer is Node.js with graphql-ws and graphql-redis-subscriptions (load-tests/peer-node), same event,",
        "same selection, same Redis; reelhouse / peer below 1.00x means reelhouse is faster.",
        "",
        "| subscribers | events | reelhouse p50 | reelhouse p99 | reelhouse max | baseline p50 | baseline p99 | ratio p50 | ratio p99 | per-delivery p99 (reelhouse) | lost (reelhouse) | lost (baseline) | errors | RSS / idle subscriber | peer p50 | peer p99 | reelhouse / peer p50 | reelhouse / peer p99 | lost (peer) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if row.get("failed"):
            lines.append(f"| {row['subscribers']} | run failed | | | | | | | | | | | | | | | | | |")
            continue
        r = row["report"]
        f = r["fanout"]
        rh, bl = f["reelhouse"], f["baseline"] or {"last_client_ms": {}, "lost_events": None}
        rss = rh.get("rss_per_subscriber_kib")
        lines.append(
            f"| {row['subscribers']} | {rh['events']} | {fmt(rh['last_client_ms']['p50'])} | {fmt(rh['last_client_ms']['p99'])} | "
            f"{fmt(rh['last_client_ms']['max'])} | {fmt(bl['last_client_ms'].get('p50'))} | {fmt(bl['last_client_ms'].get('p99'))} | "
            f"{fmt(f['ratio_p50'], 2)}x | {fmt(f['ratio_p99'], 2)}x | {fmt(rh['delivery_ms']['p99'])} | {rh['lost_events']} | "
            f"{bl.get('lost_events')} | {r['errors']} | {fmt(rss)} KiB | "
            + peer_cells(f) + " |")
    open(os.path.join(args.out, f"{fanout_name(args)}.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))

    def draw(ax):
        xs = [row["subscribers"] for row in ok]
        for side, style in (("reelhouse", "-"), ("baseline", "--")):
            for p, color in (("p50", "tab:blue"), ("p99", "tab:red"), ("max", "tab:gray")):
                ys = [((row["report"]["fanout"][side] or {}).get("last_client_ms") or {}).get(p) for row in ok]
                ax.plot(xs, ys, style, marker="o", color=color, label=f"{side} {p}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("subscribers")
        ax.set_ylabel("publish → last subscriber (ms)")
        ax.set_title(f"Fan-out latency vs subscribers ({args.profile} build)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if ok:
        plot(os.path.join(args.out, f"{fanout_name(args)}-latency.png"), draw)


def bench_api(args):
    print("\n== API: video(id) with JWT vs bare actix", file=sys.stderr)
    r = run_load(args, ["--scenario", "api", "--users", str(args.concurrency), "--duration", f"{args.seconds}s",
                        "--baseline", args.baseline_url])
    if r is None:
        sys.exit("bench-load: the API benchmark failed")
    a = r["api_bench"]
    json.dump({"machine": machine(), "profile": args.profile, "seconds": args.seconds, "report": r},
              open(os.path.join(args.out, "api.json"), "w"), indent=2)
    enc = a.get("reelhouse_half_encoding") or {"rps": None, "latency_ms": {}, "errors": None}
    rows = [("bare actix, max (closed loop)", a["baseline_max"]), ("reelhouse, max (closed loop)", a["reelhouse_max"])]
    if a.get("reelhouse_max_persisted"):
        rows.append(("reelhouse, max, persisted query (closed loop)", a["reelhouse_max_persisted"]))
    rows += [
            (f"bare actix at {a['half_load_rps']:.0f} rps", a["baseline_half"]),
            (f"reelhouse at {a['half_load_rps']:.0f} rps (idle)", a["reelhouse_half"]),
            (f"reelhouse at {a['half_load_rps']:.0f} rps while encoding", enc)]
    lines = [
        "# API benchmark",
        "",
        f"Machine: {machine()}. Build: {args.profile}. Generated by `make bench` (`BENCH_ONLY=api`), {args.seconds} s per phase,",
        f"{a['concurrency']} concurrent connections in the closed-loop phases, {a['response_bytes']}-byte response; see docs/BENCHMARKS.md.",
        "",
        f"- max rps ratio (reelhouse / bare actix): **{a['rps_ratio']:.2f}x**",
        f"- max rps ratio with an Apollo persisted query (reelhouse / bare actix): **{fmt(a.get('rps_ratio_persisted'), 2)}x**",
        f"- p99 at half load: reelhouse **{a['reelhouse_half']['latency_ms']['p99']:.2f} ms**, bare actix {a['baseline_half']['latency_ms']['p99']:.2f} ms",
        f"- p99 while encoding / idle: **{fmt(a.get('encoding_p99_ratio'), 2)}x**",
        "",
        "| phase | requests | errors | rps | p50 ms | p95 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, p in rows:
        l = p["latency_ms"]
        lines.append(f"| {name} | {p.get('requests')} | {p.get('errors')} | {fmt(p.get('rps'), 0)} | {fmt(l.get('p50'), 2)} | "
                     f"{fmt(l.get('p95'), 2)} | {fmt(l.get('p99'), 2)} | {fmt(l.get('max'), 2)} |")
    open(os.path.join(args.out, "api.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))

    def draw(ax):
        labels = ["bare max", "reelhouse max", "bare half", "reelhouse half", "reelhouse half\n+encoding"]
        width = 0.25
        for k, (p, color) in enumerate((("p50", "tab:blue"), ("p95", "tab:orange"), ("p99", "tab:red"))):
            ys = [(row[1]["latency_ms"] or {}).get(p) or 0 for row in rows]
            ax.bar([i + (k - 1) * width for i in range(len(rows))], ys, width, color=color, label=p)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.set_title(f"video(id) latency: reelhouse vs bare actix ({args.profile} build)")
        ax.legend()
        ax.grid(True, axis="y", which="both", alpha=0.3)
    plot(os.path.join(args.out, "api-latency.png"), draw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", choices=["fanout", "api"], required=True)
    ap.add_argument("--server-bin", required=True)
    ap.add_argument("--load-bin", required=True)
    ap.add_argument("--baseline-bin", required=True)
    ap.add_argument("--profile", default="release")
    ap.add_argument("--subscribers", default="100,1000,10000")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--out", default="docs/bench")
    ap.add_argument("--two-instances", action="store_true",
                    help="fan-out across two API processes (PostgreSQL + Redis, subscribers split between them)")
    ap.add_argument("--no-peer", action="store_true",
                    help="fan-out without the Node.js peer (load-tests/peer-node)")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the reelhouse server (repeatable), e.g. REELHOUSE__MEDIA__ENCODER_NICE=0")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    limit = raise_fd_limit()
    print(f"bench-load: fd limit {limit}", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="bench-load-")
    procs = []
    try:
        env = {k: v for k, v in os.environ.items()
               if not (k in ("DATABASE_URL", "REDIS_URL") or k.startswith("S3_") or k.startswith("REELHOUSE_"))}
        redis_port = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no",
                                       "--maxclients", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        args.redis_url = f"redis://127.0.0.1:{redis_port}/"
        port = free_port()
        args.url = f"http://127.0.0.1:{port}"
        # Every simulated client comes from 127.0.0.1: no rate limits, no WebSocket caps.
        server_env = dict(env, REELHOUSE__RATE_LIMIT__ENABLED="false", REELHOUSE__AUTH__UNVERIFIED_CAN_UPLOAD="true",
                          REELHOUSE__GRAPHQL__WS_MAX_SOCKETS_PER_IP="1000000",
                          REELHOUSE__GRAPHQL__WS_MAX_SOCKETS_PER_USER="1000000",
                          REELHOUSE__GRAPHQL__WS_MAX_SUBSCRIPTIONS_PER_USER="1000000",
                          REELHOUSE__MEDIA__LADDER="[{lines=240,video_bitrate_kbps=300}]",
                          REELHOUSE__MEDIA__SPEED_PRESET="ultrafast", REELHOUSE__TELEMETRY__LEVEL="warn")
        server_env.update(kv.split("=", 1) for kv in args.server_env)
        database = None
        if args.two_instances:
            # One deployment of two API processes: PostgreSQL, the bench's Redis, one
            # storage root (local disk, shared), one signing secret.
            pg = os.environ.get("REELHOUSE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
            database = (pg, f"bench_fanout_{os.getpid()}")
            psql(pg, f"CREATE DATABASE {database[1]}")
            server_env.update(DATABASE_URL=with_db(pg, database[1]), REDIS_URL=args.redis_url,
                              REELHOUSE__AUTH__JWT_SECRET=os.urandom(32).hex())
        server = subprocess.Popen([args.server_bin, "serve", "--bind", f"127.0.0.1:{port}", "--data-dir",
                                   os.path.join(work, "data")], env=server_env,
                                  stdout=open(os.path.join(work, "server.log"), "w"), stderr=subprocess.STDOUT)
        procs.append(server)
        args.server_pid = server.pid
        wait_http(args.url + "/health", server, "reelhouse")
        args.also_url = None
        if args.two_instances:
            also_port = free_port()
            second = subprocess.Popen([args.server_bin, "serve", "--bind", f"127.0.0.1:{also_port}", "--data-dir",
                                       os.path.join(work, "data")],
                                      env=dict(server_env, REELHOUSE__WORKERS__EMBEDDED="false",
                                               REELHOUSE__DATABASE__MIGRATE_ON_START="false"),
                                      stdout=open(os.path.join(work, "server2.log"), "w"), stderr=subprocess.STDOUT)
            procs.append(second)
            args.also_url = f"http://127.0.0.1:{also_port}"
            wait_http(args.also_url + "/health", second, "the second reelhouse")
        bport = free_port()
        baseline = subprocess.Popen([args.baseline_bin, "--bind", f"127.0.0.1:{bport}", "--redis-url", args.redis_url],
                                    env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "baseline.log"), "w"))
        procs.append(baseline)
        args.baseline_url = f"http://127.0.0.1:{bport}"
        wait_http(args.baseline_url + "/health", baseline, "reelhouse-baseline")
        args.peer_url = start_peer(args, env, work, procs) if args.what == "fanout" and not args.no_peer else None
        if args.what == "fanout":
            bench_fanout(args)
        else:
            bench_api(args)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if database:
            psql(database[0], f"DROP DATABASE IF EXISTS {database[1]}")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
