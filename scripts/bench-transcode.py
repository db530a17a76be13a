#!/usr/bin/env python3
"""Transcode benchmark: reelhouse's HLS ladder vs the ffmpeg CLI doing the same ladder.

Not a test: prints figures and ratios, never asserts timings.

Environment:
  BENCH_SECONDS   clip length in seconds (default 60; 1080p30 + AAC, cached)
  BENCH_RUNS      runs per side, alternating ours/ffmpeg (default 3, at least 1)
  BENCH_PROFILE   cargo profile of the example: release (default) or dev
  BENCH_RUNGS     rungs by lines (default 720,480,360)
  CARGO_TARGET_DIR  where cargo builds; fixtures go to $CARGO_TARGET_DIR/bench-fixtures
  BENCH_DOCS_DIR  where transcode.md/.json are written (default docs/bench)
"""

import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("BENCH_SECONDS", "60"))
RUNS = max(1, int(os.environ.get("BENCH_RUNS", "3")))
PROFILE = os.environ.get("BENCH_PROFILE", "release")
RUNG_LINES = os.environ.get("BENCH_RUNGS", "720,480,360")
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
DOCS = Path(os.environ.get("BENCH_DOCS_DIR", ROOT / "docs" / "bench"))
FIXTURES = TARGET / "bench-fixtures"
WORK = TARGET / "bench-work"
FPS = 30


def log(msg):
    print(f"[bench-transcode] {msg}", file=sys.stderr, flush=True)


def ensure_ffmpeg():
    """ffmpeg is a benchmark-only dependency (the product never uses it)."""
    if shutil.which("ffmpeg"):
        return
    log("ffmpeg missing: apt-get install -y ffmpeg")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(sudo + ["apt-get", "install", "-y", "ffmpeg"], env=env).returncode != 0:
        subprocess.run(sudo + ["apt-get", "update"], env=env, check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "ffmpeg"], env=env, check=True)


def cargo_build(what, output):
    return benchlib.cargo_build(what, output, TARGET, PROFILE, log)


def build_example():
    return cargo_build(["--example", "bench_ladder"], "examples/bench_ladder")


def build_server():
    """The reelhouse binary: the jailed side runs the ladder in its `reelhouse media` child."""
    return cargo_build(["--bin", "reelhouse"], "reelhouse")


def ensure_clip():
    """A 1080p30 H.264 + AAC MP4 from GStreamer test sources, cached by length."""
    return benchlib.test_clip(
        FIXTURES / f"clip-1080p30-{SECONDS}s.mp4",
        width=1920, height=1080, fps=FPS, seconds=SECONDS, video_kbps=8000, faststart=False, log=log,
    )


def timed(cmd, stdout=subprocess.PIPE, env=None):
    """Run a child; wall seconds and the child's own user+sys CPU seconds (wait4)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    wall = time.monotonic() - started
    # communicate() reaped the child; its rusage is in RUSAGE_CHILDREN (delta taken by caller)
    return proc.returncode, wall, out, err


def run_with_cpu(cmd, env=None):
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    rc, wall, out, err = timed(cmd, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc != 0:
        sys.stderr.write(err.decode(errors="replace")[-4000:])
        raise SystemExit(f"{cmd[0]} failed with {rc}")
    return wall, cpu, out


def es_bytes(directory, kind):
    """Bytes of the elementary stream (v: H.264, a: AAC/ADTS) without the MPEG-TS overhead."""
    fmt = "h264" if kind == "v" else "adts"
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(Path(directory) / "index.m3u8"), "-map", f"0:{kind}", "-c", "copy", "-f", fmt, "-"],
        capture_output=True,
    ).stdout
    return len(out)


def ts_bytes(directory):
    return sum(p.stat().st_size for p in Path(directory).glob("*.ts"))


def run_ours(binary, clip, out, jail=None):
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, BENCH_JAIL=str(jail)) if jail else None
    wall, cpu, stdout = run_with_cpu([str(binary), str(clip), str(out), RUNG_LINES], env=env)
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    rungs = {r["name"]: ts_bytes(out / r["name"]) for r in report["rungs"]}
    return {"wall_s": wall, "cpu_s": cpu, "report": report, "bytes": rungs}


def ffmpeg_cmd(clip, out, plan):
    """The same ladder: decode once, split, bilinear scale, x264 veryfast, same rate
    control as ours (x264enc pass=cbr: ABR with maxrate = bitrate and a 600 ms VBV),
    no B-frames (ours sets bframes=0), High profile, fixed GOP, HLS MPEG-TS segments."""
    n = len(plan["rungs"])
    labels = [f"s{i}" for i in range(n)]
    graph = f"[0:v]split={n}" + "".join(f"[{l}]" for l in labels) + ";"
    graph += ";".join(
        f"[{l}]scale={r['width']}:{r['height']}:flags=bilinear[v{r['name']}]" for l, r in zip(labels, plan["rungs"])
    )
    keyint = plan["keyint"]
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(clip), "-filter_complex", graph]
    for r in plan["rungs"]:
        kbps = r["video_bitrate_kbps"]
        d = out / r["name"]
        d.mkdir(parents=True, exist_ok=True)
        cmd += ["-map", f"[v{r['name']}]", "-map", "0:a?"]
        cmd += ["-c:v", "libx264", "-preset", plan["speed_preset"], "-profile:v", "high", "-pix_fmt", "yuv420p"]
        cmd += ["-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps * 600 // 1000}k", "-bf", "0"]
        cmd += ["-g", str(keyint), "-keyint_min", str(keyint), "-sc_threshold", "0"]
        cmd += ["-c:a", "aac", "-b:a", f"{plan['audio_bitrate_kbps']}k"]
        cmd += ["-f", "hls", "-hls_time", str(plan["segment_seconds"]), "-hls_playlist_type", "vod"]
        cmd += ["-hls_segment_type", "mpegts", "-hls_segment_filename", str(d / "segment%05d.ts"), str(d / "index.m3u8")]
    return cmd


def run_ffmpeg(clip, out, plan):
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    wall, cpu, _ = run_with_cpu(ffmpeg_cmd(clip, out, plan))
    return {"wall_s": wall, "cpu_s": cpu, "bytes": {r["name"]: ts_bytes(out / r["name"]) for r in plan["rungs"]}}


def psnr(out, clip, plan):
    """Two PSNR figures per rung, frames paired by index (timestamps rewritten to N/fps:
    HLS/TS shifts and rounds them, and a one-frame slip on moving content would dominate).

    - `psnr_avg_db`/`psnr_y_db`: the rung against the source scaled down to the rung's size
      with swscale bilinear (ffmpeg's own scaler, so this reference favours ffmpeg's output);
    - `psnr_1080_db`: the rung scaled up to the source size with swscale bicubic against the
      untouched source (the same upscaler for both sides, no downscaled reference);
    - `ssim_1080`: SSIM (All) of the same upscaled rung against the untouched source.
    One decode of the source for all rungs."""
    rungs = plan["rungs"]
    n = len(rungs)
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]
    for r in rungs:
        cmd += ["-i", str(out / r["name"] / "index.m3u8")]
    cmd += ["-i", str(clip)]
    graph = f"[{n}:v]setpts=N/{FPS}/TB,split={3 * n}" + "".join(f"[src{i}]" for i in range(3 * n)) + ";"
    stats, parts = [], []
    for i, r in enumerate(rungs):
        down, full = out / f"psnr-{r['name']}.log", out / f"psnr-{r['name']}-1080.log"
        ssim = out / f"ssim-{r['name']}-1080.log"
        stats.append((down, full, ssim))
        parts.append(
            f"[{i}:v]setpts=N/{FPS}/TB,split=2[dist{i}][distb{i}];"
            f"[src{i}]scale={r['width']}:{r['height']}:flags=bilinear[ref{i}];"
            f"[dist{i}][ref{i}]psnr=stats_file={down};"
            f"[distb{i}]scale=1920:1080:flags=bicubic,split=2[up{i}][upb{i}];"
            f"[up{i}][src{n + i}]psnr=stats_file={full};"
            f"[upb{i}][src{2 * n + i}]ssim=stats_file={ssim}"
        )
    graph += ";".join(parts)
    subprocess.run(cmd + ["-filter_complex", graph, "-f", "null", "-"], check=True)

    def db(values):
        m = sum(values) / len(values)
        return 100.0 if m <= 0 else 10 * math.log10(255 * 255 / m)

    def read(stat):
        rows = [dict(kv.split(":", 1) for kv in line.split() if ":" in kv) for line in stat.read_text().splitlines()]
        return [float(x["mse_avg"]) for x in rows], [float(x["mse_y"]) for x in rows]

    def mean_ssim(stat):
        values = [float(kv.split(":", 1)[1]) for line in stat.read_text().splitlines() for kv in line.split() if kv.startswith("All:")]
        return sum(values) / len(values) if values else 0.0

    result = {}
    for r, (down, full, ssim) in zip(rungs, stats):
        avg, y = read(down)
        avg_full, _ = read(full)
        result[r["name"]] = {
            "psnr_avg_db": db(avg),
            "psnr_y_db": db(y),
            "psnr_1080_db": db(avg_full),
            "ssim_1080": mean_ssim(ssim),
            "frames": len(avg),
        }
    return result


def x264_settings(directory):
    """The x264 settings string the encoder wrote into the stream (SEI user data)."""
    seg = sorted(Path(directory).glob("*.ts"))
    if not seg:
        return None
    es = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(seg[0]), "-map", "0:v", "-c", "copy", "-f", "h264", "-"], capture_output=True
    ).stdout
    m = re.search(rb"x264 - core [\x20-\x7e]*", es)
    return m.group(0).decode(errors="replace") if m else None


def machine():
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gst = subprocess.run(["gst-launch-1.0", "--version"], capture_output=True, text=True).stdout.splitlines()
    ff = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gstreamer": gst[1] if len(gst) > 1 else "?",
        "ffmpeg": ff[0] if ff else "?",
        "load_avg_at_start": os.getloadavg(),
    }


def main():
    ensure_ffmpeg()
    binary = build_example()
    server = build_server()
    clip = ensure_clip()
    mach = machine()
    WORK.mkdir(parents=True, exist_ok=True)
    ours_dir, ff_dir, jail_dir = WORK / "ours", WORK / "ffmpeg", WORK / "jailed"

    ours_runs, ff_runs, jail_runs, plan = [], [], [], None
    for i in range(RUNS):
        order = ["ours", "jailed", "ffmpeg"] if i % 2 == 0 else ["ffmpeg", "jailed", "ours"]
        for side in order:  # ours runs first in run 1, so the plan exists before ffmpeg runs
            if side == "ours":
                run = run_ours(binary, clip, ours_dir)
                ours_runs.append(run)
                plan = plan or run["report"]
            elif side == "jailed":
                run = run_ours(binary, clip, jail_dir, jail=server)
                jail_runs.append(run)
            else:
                run = run_ffmpeg(clip, ff_dir, plan)
                ff_runs.append(run)
            log(f"run {i + 1} {side:6} wall {run['wall_s']:.2f} s cpu {run['cpu_s']:.2f} s")

    med = statistics.median
    names = [r["name"] for r in plan["rungs"]]
    ours = {
        "wall_s": med(r["wall_s"] for r in ours_runs),
        "pipeline_wall_s": med(r["report"]["wall_s"] for r in ours_runs),
        "first_playable_s": med(r["report"]["first_playable_s"] or r["report"]["wall_s"] for r in ours_runs),
        "first_playable_rung": ours_runs[-1]["report"]["first_playable_rung"],
        "cpu_s": med(r["cpu_s"] for r in ours_runs),
        "bytes": {n: int(med(r["bytes"][n] for r in ours_runs)) for n in names},
        "runs": [{"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "first_playable_s": r["report"]["first_playable_s"]} for r in ours_runs],
    }
    jailed = {
        "wall_s": med(r["wall_s"] for r in jail_runs),
        "cpu_s": med(r["cpu_s"] for r in jail_runs),
        "first_playable_s": med(r["report"]["first_playable_s"] or r["report"]["wall_s"] for r in jail_runs),
        "runs": [{"wall_s": r["wall_s"], "cpu_s": r["cpu_s"]} for r in jail_runs],
    }
    ff = {
        "wall_s": med(r["wall_s"] for r in ff_runs),
        "cpu_s": med(r["cpu_s"] for r in ff_runs),
        "bytes": {n: int(med(r["bytes"][n] for r in ff_runs)) for n in names},
        "runs": [{"wall_s": r["wall_s"], "cpu_s": r["cpu_s"]} for r in ff_runs],
    }
    log("PSNR of the last run of each side")
    ours["psnr"] = psnr(ours_dir, clip, plan)
    ff["psnr"] = psnr(ff_dir, clip, plan)
    for side, d in ((ours, ours_dir), (ff, ff_dir)):
        side["video_es_bytes"] = {n: es_bytes(d / n, "v") for n in names}
        side["audio_es_bytes"] = {n: es_bytes(d / n, "a") for n in names}
    ours["x264"] = x264_settings(ours_dir / names[0])
    ff["x264"] = x264_settings(ff_dir / names[0])

    ratios = {
        "wall": ours["wall_s"] / ff["wall_s"],
        "jailed_wall": jailed["wall_s"] / ff["wall_s"],
        "jailed_over_in_process_wall": jailed["wall_s"] / ours["wall_s"],
        "jailed_over_in_process_cpu": jailed["cpu_s"] / ours["cpu_s"],
        "cpu": ours["cpu_s"] / ff["cpu_s"],
        "first_playable_vs_ladder": ours["first_playable_s"] / ours["wall_s"],
        "bytes": {n: ours["bytes"][n] / ff["bytes"][n] for n in names},
        "video_es_bytes": {n: ours["video_es_bytes"][n] / ff["video_es_bytes"][n] for n in names},
        "psnr_delta_db": {n: ours["psnr"][n]["psnr_avg_db"] - ff["psnr"][n]["psnr_avg_db"] for n in names},
        "psnr_1080_delta_db": {n: ours["psnr"][n]["psnr_1080_db"] - ff["psnr"][n]["psnr_1080_db"] for n in names},
        "ssim_1080_delta": {n: ours["psnr"][n]["ssim_1080"] - ff["psnr"][n]["ssim_1080"] for n in names},
    }
    result = {
        "clip": {"path": str(clip), "seconds": SECONDS, "size": "1920x1080", "fps": FPS, "bytes": clip.stat().st_size},
        "runs_per_side": RUNS,
        "profile": PROFILE,
        "plan": {k: plan[k] for k in ("keyint", "segment_seconds", "speed_preset", "scale_method", "audio_bitrate_kbps")}
        | {"rungs": [{k: r[k] for k in ("name", "width", "height", "video_bitrate_kbps")} for r in plan["rungs"]]},
        "machine": mach,
        "ours": ours,
        "jailed": jailed,
        "ffmpeg": ff,
        "ratios_ours_over_ffmpeg": ratios,
        "targets": {"wall": "<= 1.00x", "bytes": "within +-3 %", "psnr": "within 0.1 dB", "first_playable_vs_ladder": "<= 0.35x",
                    "jailed_wall": "within 2 % of in-process"},
    }
    write_reports(result, names)


def verdict(ok):
    return "met" if ok else "MISSED"


def write_reports(res, names):
    o, f, r, j = res["ours"], res["ffmpeg"], res["ratios_ours_over_ffmpeg"], res["jailed"]
    rows = [
        "| metric | reelhouse (GStreamer) | ffmpeg CLI | ours / ffmpeg | target |",
        "|---|---:|---:|---:|---|",
        f"| wall, median (s) | {o['wall_s']:.2f} | {f['wall_s']:.2f} | {r['wall']:.3f}x | <= 1.00x: {verdict(r['wall'] <= 1.0)} |",
        f"| CPU user+sys, median (s) | {o['cpu_s']:.2f} | {f['cpu_s']:.2f} | {r['cpu']:.3f}x | (reported) |",
        f"| wall in the media jail (`reelhouse media` child), median (s) | {j['wall_s']:.2f} | {f['wall_s']:.2f} | "
        f"{r['jailed_wall']:.3f}x ({r['jailed_over_in_process_wall']:.3f}x in-process) | within 2 % of in-process: "
        f"{verdict(abs(r['jailed_over_in_process_wall'] - 1) <= 0.02)} |",
        f"| CPU in the media jail, median (s) | {j['cpu_s']:.2f} | {f['cpu_s']:.2f} | "
        f"{j['cpu_s'] / f['cpu_s']:.3f}x ({r['jailed_over_in_process_cpu']:.3f}x in-process) | (reported) |",
        f"| first playable rung ({o['first_playable_rung']}), median (s) | {o['first_playable_s']:.2f} | - | "
        f"{r['first_playable_vs_ladder']:.3f}x of ours' whole ladder | <= 0.35x: {verdict(r['first_playable_vs_ladder'] <= 0.35)} |",
    ]
    for n in names:
        b = r["bytes"][n]
        rows.append(
            f"| {n} bytes (TS segments) | {o['bytes'][n]:,} | {f['bytes'][n]:,} | {b:.3f}x | +-3 %: {verdict(abs(b - 1) <= 0.03)} |"
        )
    for n in names:
        b = r["video_es_bytes"][n]
        rows.append(
            f"| {n} bytes (H.264 stream only, last run) | {o['video_es_bytes'][n]:,} | {f['video_es_bytes'][n]:,} | "
            f"{b:.3f}x | +-3 %: {verdict(abs(b - 1) <= 0.03)} |"
        )
    for n in names:
        rows.append(
            f"| {n} bytes (AAC stream only, last run) | {o['audio_es_bytes'][n]:,} | {f['audio_es_bytes'][n]:,} | "
            f"{o['audio_es_bytes'][n] / max(1, f['audio_es_bytes'][n]):.3f}x | (reported) |"
        )
    for n in names:
        d = r["psnr_delta_db"][n]
        rows.append(
            f"| {n} PSNR avg (Y) dB | {o['psnr'][n]['psnr_avg_db']:.2f} ({o['psnr'][n]['psnr_y_db']:.2f}) | "
            f"{f['psnr'][n]['psnr_avg_db']:.2f} ({f['psnr'][n]['psnr_y_db']:.2f}) | {d:+.2f} dB | "
            f"+-0.1 dB: {verdict(abs(d) <= 0.1)} |"
        )
    for n in names:
        d = r["psnr_1080_delta_db"][n]
        rows.append(
            f"| {n} PSNR avg at 1080p (bicubic up) dB | {o['psnr'][n]['psnr_1080_db']:.2f} | "
            f"{f['psnr'][n]['psnr_1080_db']:.2f} | {d:+.2f} dB | +-0.1 dB: {verdict(abs(d) <= 0.1)} |"
        )
    for n in names:
        d = r["ssim_1080_delta"][n]
        rows.append(
            f"| {n} SSIM (All) at 1080p (bicubic up) | {o['psnr'][n]['ssim_1080']:.4f} | "
            f"{f['psnr'][n]['ssim_1080']:.4f} | {d:+.4f} | +-0.002: {verdict(abs(d) <= 0.002)} |"
        )
    table = "\n".join(rows)
    m = res["machine"]
    plan = res["plan"]
    ladder = ", ".join(f"{x['name']} {x['width']}x{x['height']} @ {x['video_bitrate_kbps']} kb/s" for x in plan["rungs"])
    runs = "\n".join(
        f"| {i + 1} | {a['wall_s']:.2f} | {a['cpu_s']:.2f} | {a['first_playable_s'] or 0:.2f} | {b['wall_s']:.2f} | {b['cpu_s']:.2f} |"
        for i, (a, b) in enumerate(zip(o["runs"], f["runs"]))
    )
    md = f"""# Transcode benchmark (generated by `scripts/bench-transcode.py`)

Clip: {res['clip']['seconds']} s 1920x1080 @ {res['clip']['fps']} fps H.264 + AAC from GStreamer test sources
(`{Path(res['clip']['path']).name}`, {res['clip']['bytes']:,} bytes). Ladder: {ladder}; x264 `{plan['speed_preset']}`,
keyint {plan['keyint']} ({plan['segment_seconds']} s segments), `{plan['scale_method']}` scaling (ffmpeg: `flags=bilinear`), AAC {plan['audio_bitrate_kbps']} kb/s,
HLS MPEG-TS. {res['runs_per_side']} alternating runs per side, medians. Example built with the `{res['profile']}` profile.

Machine: {m['nproc']} CPUs ({m['cpu_model']}), kernel {m['kernel']}, {m['gstreamer']}, {m['ffmpeg']};
load average at start {', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])}; {m['date_utc']}.

{table}

Per run (in the order run, alternating):

| run | ours wall (s) | ours CPU (s) | ours first playable (s) | ffmpeg wall (s) | ffmpeg CPU (s) |
|---|---:|---:|---:|---:|---:|
{runs}

x264 settings as written in the streams (720p):

- ours: `{o['x264']}`
- ffmpeg: `{f['x264']}`
"""
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "transcode.md").write_text(md)
    (DOCS / "transcode.json").write_text(json.dumps(res, indent=2) + "\n")
    print(table)
    log(f"wrote {DOCS / 'transcode.md'} and {DOCS / 'transcode.json'}")


if __name__ == "__main__":
    main()
