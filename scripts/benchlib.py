"""Helpers the benchmark scripts share (bench-*.py): building the binary under
test, the generated test clips, free ports. Only the standard library."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cargo_build(what: list[str], output: str, target: Path, profile: str, log) -> Path:
    """`cargo build -p reelhouse <what>` in `profile` (release or debug) into
    `target`; returns the path of `output` (e.g. "reelhouse", "examples/bench_ladder")."""
    cmd = ["cargo", "build", "-p", "reelhouse"] + what
    if profile == "release":
        cmd.insert(2, "--release")
    log(" ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, CARGO_TARGET_DIR=str(target)))
    return target / ("release" if profile == "release" else "debug") / output


def test_clip(
    path: Path,
    *,
    width: int,
    height: int,
    fps: int,
    seconds: int,
    video_kbps: int,
    faststart: bool,
    log,
) -> Path:
    """A width x height H.264 (x264 medium, a keyframe every 2 s) + AAC MP4 from
    GStreamer test sources at `path`, made once and cached."""
    if path.exists() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = seconds * fps
    tmp = path.with_suffix(".tmp.mp4")
    log(f"generating {path} ({seconds} s, {width}x{height}p{fps}, x264 medium + AAC)")
    mux = "mp4mux faststart=true name=mux" if faststart else "mp4mux name=mux"
    pipeline = (
        f"videotestsrc pattern=smpte horizontal-speed=4 num-buffers={frames} "
        f"! video/x-raw,width={width},height={height},framerate={fps}/1,format=I420 "
        f"! x264enc speed-preset=medium bitrate={video_kbps} key-int-max=60 ! h264parse ! queue "
        f"! {mux} ! filesink location={tmp} "
        f"audiotestsrc wave=sine freq=440 samplesperbuffer=1600 num-buffers={frames} "
        "! audio/x-raw,rate=48000,channels=2 ! audioconvert ! avenc_aac bitrate=128000 "
        "! aacparse ! queue ! mux."
    )
    subprocess.run(["gst-launch-1.0", "-q", "-e"] + pipeline.split(), check=True)
    tmp.rename(path)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
