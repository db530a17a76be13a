#!/usr/bin/env python3
"""Generate the hostile upload corpus (issue 17) into OUT_DIR.

Usage: scripts/make-hostile-corpus.py OUT_DIR

Every file is made at test time from stock tools (ffmpeg, gst-launch-1.0) and byte
surgery in Python; nothing is committed. Each file is named for what it is, and
scripts/hostile-corpus.manifest (next to this script) says how an upload of it must
end. The script fails if the files it made and the manifest disagree.

Random choices (fuzzing, noise) use fixed seeds, so the corpus is the same on every
run. Everything is tiny (160x90, about a second) so the test stays fast; the bombs
lie in their headers instead of being big.
"""

import io
import os
import random
import struct
import subprocess
import sys
import zipfile
import zlib

OUT = None
W, H = 160, 90


def path(name):
    return os.path.join(OUT, name)


def run(*args):
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ffmpeg(*args):
    run("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args)


def gst(description):
    run("gst-launch-1.0", "-q", *description.split())


def read(name):
    with open(path(name), "rb") as f:
        return f.read()


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


LAVFI_VIDEO = ["-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=25:duration=1"]
LAVFI_AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25"]


# --- MP4 box surgery -------------------------------------------------------------

def boxes(data, start=0, end=None):
    """(offset, size, type) of the boxes in data[start:end] (one level)."""
    end = len(data) if end is None else end
    out = []
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8:at + 16])[0]
        elif size == 0:
            size = end - at
        out.append((at, size, kind))
        if size < 8:
            break
        at += size
    return out


def find_boxes(data, kind, start=0, end=None):
    """Every box of `kind` under the container boxes that hold tracks."""
    found = []
    for at, size, k in boxes(data, start, end):
        if k == kind:
            found.append((at, size))
        if k in (b"moov", b"trak", b"mdia"):
            found.extend(find_boxes(data, kind, at + 8, at + size))
    return found


def set_duration(data, seconds):
    """Rewrite mvhd, tkhd and mdhd durations (version 0 boxes) to `seconds`."""
    data = bytearray(data)
    (mvhd, _), = find_boxes(data, b"mvhd")
    movie_scale = struct.unpack(">I", data[mvhd + 20:mvhd + 24])[0]
    struct.pack_into(">I", data, mvhd + 24, seconds * movie_scale)
    for tkhd, _ in find_boxes(data, b"tkhd"):
        struct.pack_into(">I", data, tkhd + 28, seconds * movie_scale)
    for mdhd, _ in find_boxes(data, b"mdhd"):
        scale = struct.unpack(">I", data[mdhd + 20:mdhd + 24])[0]
        struct.pack_into(">I", data, mdhd + 24, min(seconds * scale, 0xFFFFFFFF))
    return bytes(data)


# --- H.264 SPS surgery -----------------------------------------------------------

class Bits:
    def __init__(self, data):
        self.bits = "".join(f"{b:08b}" for b in data)
        self.at = 0

    def u(self, n):
        value = int(self.bits[self.at:self.at + n], 2)
        self.at += n
        return value

    def ue(self):
        zeros = 0
        while self.bits[self.at] == "0":
            zeros += 1
            self.at += 1
        self.at += 1
        suffix = int(self.bits[self.at:self.at + zeros], 2) if zeros else 0
        self.at += zeros
        return (1 << zeros) - 1 + suffix


def ue_bits(value):
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def unescape(payload):
    return payload.replace(b"\x00\x00\x03", b"\x00\x00")


def escape(rbsp):
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def sps_with_size(nal, width, height):
    """A baseline-profile SPS NAL (header byte first) rewritten to declare width x height."""
    r = Bits(unescape(nal[1:]))
    profile = r.u(8)
    assert profile == 66, f"expected a baseline SPS, got profile {profile}"
    head = r.bits[:24]
    r.u(16)
    fields = []
    fields.append(ue_bits(r.ue()))  # seq_parameter_set_id
    fields.append(ue_bits(r.ue()))  # log2_max_frame_num_minus4
    poc_type = r.ue()
    fields.append(ue_bits(poc_type))
    if poc_type == 0:
        fields.append(ue_bits(r.ue()))
    elif poc_type == 1:
        raise SystemExit("pic_order_cnt_type 1 is not handled")
    fields.append(ue_bits(r.ue()))  # max_num_ref_frames
    fields.append(str(r.u(1)))  # gaps_in_frame_num_value_allowed_flag
    r.ue()
    r.ue()
    fields.append(ue_bits(width // 16 - 1))
    fields.append(ue_bits(height // 16 - 1))
    frame_mbs_only = r.u(1)
    assert frame_mbs_only == 1
    fields.append("1")
    fields.append(str(r.u(1)))  # direct_8x8_inference_flag
    if r.u(1):  # frame_cropping_flag: drop the crop, the size is a multiple of 16
        for _ in range(4):
            r.ue()
    fields.append("0")
    rest = r.bits[r.at:]
    # rest ends with the old rbsp trailing bits; keep everything up to its stop bit.
    rest = rest[: rest.rstrip("0").rfind("1")] if "1" in rest.rstrip("0") else ""
    bits = head + "".join(fields) + rest + "1"
    bits += "0" * (-len(bits) % 8)
    rbsp = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
    return nal[:1] + escape(rbsp)


def split_annexb(stream):
    """[(start_code, nal)] of an Annex B stream."""
    out = []
    at = 0
    positions = []
    while True:
        i = stream.find(b"\x00\x00\x01", at)
        if i < 0:
            break
        code_start = i - 1 if i > 0 and stream[i - 1] == 0 else i
        positions.append((code_start, i + 3))
        at = i + 3
    for n, (code_start, nal_start) in enumerate(positions):
        nal_end = positions[n + 1][0] if n + 1 < len(positions) else len(stream)
        out.append((stream[code_start:nal_start], stream[nal_start:nal_end]))
    return out


# --- EBML (Matroska) surgery -----------------------------------------------------

def set_mkv_duration(data, milliseconds):
    """Rewrite the Segment Info Duration (0x4489, an 8-byte float with 1 ms timescale)."""
    data = bytearray(data)
    at = data.find(b"\x44\x89\x88")
    assert at > 0, "no 8-byte Duration element"
    struct.pack_into(">d", data, at + 3, float(milliseconds))
    return bytes(data)


# --- the corpus ------------------------------------------------------------------

def bases():
    """Valid clips the rest is made from (kept in the corpus where listed)."""
    ffmpeg(*LAVFI_VIDEO, *LAVFI_AUDIO, *X264, "-c:a", "aac", "-b:a", "48k", "-movflags", "+faststart",
           path("valid_h264_aac_faststart.mp4"))
    ffmpeg(*LAVFI_VIDEO, *LAVFI_AUDIO, *X264, "-c:a", "aac", "-b:a", "48k", path(".base_moov_at_end.mp4"))
    ffmpeg(*LAVFI_VIDEO, *X264, "-profile:v", "baseline", "-bsf:v", "h264_mp4toannexb", "-f", "h264",
           path(".base_baseline.h264"))


def dimension_bombs():
    # One JPEG frame whose SOF0 says 16000x16000 (the MJPEG-in-Matroska bomb).
    gst(f"videotestsrc num-buffers=1 ! video/x-raw,width=64,height=64 ! jpegenc ! filesink location={path('.tiny.jpg')}")
    jpeg = bytearray(read(".tiny.jpg"))
    sof = jpeg.find(b"\xff\xc0")
    struct.pack_into(">HH", jpeg, sof + 5, 16000, 16000)
    write(".bomb.jpg", bytes(jpeg))
    gst(f"multifilesrc location={path('.bomb.jpg')} num-buffers=1 caps=image/jpeg,framerate=1/1 ! jpegparse "
        f"! matroskamux ! filesink "
        f"location={path('dimension_bomb_mjpeg_16000x16000.mkv')}")
    # One PNG frame whose IHDR says 16000x16000 (a real decompression bomb would be
    # 750 KB of zlib; the header is what matters before decoding).
    ihdr = struct.pack(">IIBBBBB", 16000, 16000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (16000 * 3 + 1) * 4)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    write(".bomb.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    gst(f"multifilesrc location={path('.bomb.png')} num-buffers=1 caps=image/png,framerate=1/1 ! pngparse "
        f"! qtmux ! filesink "
        f"location={path('dimension_bomb_png_16000x16000.mov')}")
    # H.264 whose SPS says 16000x16000 (the slices are still the 160x90 ones).
    nals = split_annexb(read(".base_baseline.h264"))
    patched = b"".join(code + (sps_with_size(nal, 16000, 16000) if nal[0] & 0x1F == 7 else nal)
                       for code, nal in nals)
    write(".bomb.h264", patched)
    # Muxed by GStreamer's parsers only: ffmpeg would decode the frames to learn the size.
    ts = path("dimension_bomb_h264_sps_16000x16000.ts")
    gst(f"filesrc location={path('.bomb.h264')} ! video/x-h264,stream-format=byte-stream,framerate=25/1 "
        f"! h264parse ! mpegtsmux ! filesink location={ts}")
    gst(f"filesrc location={ts} ! tsdemux ! h264parse ! mp4mux "
        f"! filesink location={path('dimension_bomb_h264_sps_16000x16000.mp4')}")


def frame_count_bombs():
    # Ten thousand 16x16 frames played at 1000 fps.
    for name in ["frame_count_bomb_16x16_1000fps.mkv", "frame_count_bomb_16x16_1000fps.mp4"]:
        ffmpeg("-f", "lavfi", "-i", "color=c=red:size=16x16:rate=1000", "-frames:v", "10000", *X264, path(name))


def duration_lies():
    write("duration_lie_10h_header.mp4", set_duration(read("valid_h264_aac_faststart.mp4"), 10 * 3600))
    ffmpeg("-i", path("valid_h264_aac_faststart.mp4"), "-c", "copy", path(".base.mkv"))
    write("duration_lie_10h_header.mkv", set_mkv_duration(read(".base.mkv"), 10 * 3600 * 1000))


def still_image():
    # One picture shown for three hours: a tiny source that asks for hours of encoding.
    ffmpeg("-f", "lavfi", "-i", f"color=c=gray:size={W}x{H}:rate=1/10800", "-frames:v", "1", *X264,
           path("still_image_3h_one_frame.mp4"))


def many_tracks():
    maps = []
    for _ in range(120):
        maps += ["-map", "1:a"]
    ffmpeg(*LAVFI_VIDEO, "-f", "lavfi", "-i", "sine=duration=0.2:sample_rate=8000", "-map", "0:v", *maps, *X264,
           "-c:a", "pcm_s16le", path("tracks_121_pcm.mkv"))
    maps = []
    for _ in range(100):
        maps += ["-map", "1:a"]
    ffmpeg(*LAVFI_VIDEO, "-f", "lavfi", "-i", "sine=duration=0.2", "-map", "0:v", *maps, *X264,
           "-c:a", "aac", "-b:a", "16k", path("tracks_101_aac.mp4"))


def tiny_files():
    write("empty_zero_bytes.mp4", b"")
    write("one_byte.mp4", b"\x00")
    write("random_64k_bytes.mp4", random.Random(17).randbytes(65536))


def truncations():
    data = read("valid_h264_aac_faststart.mp4")
    size = len(data)
    (moov, moov_size), = find_boxes(data, b"moov")
    cuts = [
        ("in_ftyp", 12),
        ("after_ftyp", moov),
        ("in_moov_header", moov + 40),
        ("mid_moov", moov + moov_size // 2),
        ("end_of_moov", moov + moov_size),
        ("pct10", size * 10 // 100),
        ("pct30", size * 30 // 100),
        ("pct50", size * 50 // 100),
        ("pct80", size * 80 // 100),
        ("last_byte", size - 1),
    ]
    for label, at in cuts:
        write(f"truncated_{label}.mp4", data[:at])


def wrong_magic():
    data = bytearray(read("valid_h264_aac_faststart.mp4"))
    data[4:8] = b"ftyz"
    write("wrong_magic_ftyp_renamed.mp4", bytes(data))
    write("wrong_magic_ebml_before_mp4.mp4", b"\x1a\x45\xdf\xa3" + read("valid_h264_aac_faststart.mp4"))


def other_formats():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "not a video\n" * 100)
    write("zip_renamed.mp4", buf.getvalue())
    write("pdf_renamed.mp4", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
    write("html_renamed.mp4", b"<!doctype html><html><body><script>alert(1)</script></body></html>\n")


def polyglots():
    # A valid MP4 with a ZIP appended (ZIP readers look at the end of the file).
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("payload.html", "<script>alert(1)</script>")
    write("polyglot_mp4_with_zip_appended.mp4", read("valid_h264_aac_faststart.mp4") + buf.getvalue())
    # An ftyp box, then a PDF: MP4 magic, no movie.
    data = read("valid_h264_aac_faststart.mp4")
    (ftyp, ftyp_size), = [(a, s) for a, s, k in boxes(data) if k == b"ftyp"]
    write("polyglot_ftyp_then_pdf.mp4", data[:ftyp + ftyp_size] + read("pdf_renamed.mp4") * 20)


def corrupt_nals():
    ffmpeg("-f", "h264", "-r", "25", "-i", path(".base_baseline.h264"), "-c", "copy", path(".base.ts"))
    base = read(".base.ts")
    rng = random.Random(4)
    # The SPS payload overwritten with noise (no zero bytes, so no new start codes).
    data = bytearray(base)
    at = data.find(b"\x00\x00\x01\x67")
    assert at > 0
    for i in range(at + 5, at + 15):
        data[i] = rng.randrange(1, 256)
    write("corrupt_nal_sps_noise.ts", bytes(data))
    # Every slice NAL overwritten with noise after its first bytes.
    data = bytearray(base)
    at = 0
    while True:
        at = data.find(b"\x00\x00\x01", at)
        if at < 0:
            break
        kind = data[at + 3] & 0x1F
        if kind in (1, 5):
            for i in range(at + 8, min(at + 120, len(data))):
                if i % 188 >= 4:  # leave the TS packet headers alone
                    data[i] = rng.randrange(1, 256)
        at += 3
    write("corrupt_nal_slices_noise.ts", bytes(data))


def stream_kinds():
    ffmpeg("-i", path("valid_h264_aac_faststart.mp4"), "-vn", "-c", "copy", path("audio_only_aac.m4a"))
    ffmpeg(*LAVFI_AUDIO, "-c:a", "libopus", "-b:a", "24k", path("audio_only_opus.ogg"))
    ffmpeg("-i", path("valid_h264_aac_faststart.mp4"), "-an", "-c", "copy", "-movflags", "+faststart",
           path("video_only_h264.mp4"))
    ffmpeg(*LAVFI_VIDEO, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "100k",
           path("video_only_vp9.webm"))


def unsupported():
    ffmpeg(*LAVFI_VIDEO, "-c:v", "mjpeg", "-q:v", "8", path("unsupported_video_mjpeg.avi"))
    ffmpeg(*LAVFI_VIDEO, "-c:v", "libtheora", "-q:v", "3", path("unsupported_video_theora.ogg"))
    ffmpeg(*LAVFI_VIDEO, "-c:v", "mpeg2video", path("unsupported_video_mpeg2.ts"))
    ffmpeg(*LAVFI_VIDEO, "-c:v", "prores_ks", "-profile:v", "0", path("unsupported_video_prores.mov"))
    ffmpeg(*LAVFI_VIDEO, "-c:v", "ffv1", path("unsupported_video_ffv1.mkv"))
    ffmpeg(*LAVFI_VIDEO, *LAVFI_AUDIO, *X264, "-c:a", "mp2", path("unsupported_audio_mp2.ts"))
    ffmpeg(*LAVFI_VIDEO, "-c:v", "mpeg1video", "-f", "vob", path("unsupported_container_mpeg_ps.mp4"))


def nested():
    # An MP4 inside the media data of another MP4 that has no movie box.
    inner = read("valid_h264_aac_faststart.mp4")
    data = read("valid_h264_aac_faststart.mp4")
    (ftyp, ftyp_size), = [(a, s) for a, s, k in boxes(data) if k == b"ftyp"]
    write("nested_mp4_inside_mdat_no_moov.mp4",
          data[:ftyp + ftyp_size] + struct.pack(">I4s", len(inner) + 8, b"mdat") + inner)
    # A Matroska file with one audio track and a whole MP4 as an attachment.
    ffmpeg(*LAVFI_AUDIO, "-c:a", "libopus", "-b:a", "24k", "-attach", path("valid_h264_aac_faststart.mp4"),
           "-metadata:s:t", "mimetype=video/mp4", path("nested_mp4_attached_to_audio_mkv.mkv"))


def moov_lies():
    data = read(".base_moov_at_end.mp4")
    (moov, _), = find_boxes(data, b"moov")
    big = bytearray(data)
    struct.pack_into(">I", big, moov, 0x7FFFFFF0)
    write("moov_at_end_size_too_big.mp4", bytes(big))
    small = bytearray(data)
    struct.pack_into(">I", small, moov, 24)
    write("moov_at_end_size_too_small.mp4", bytes(small))


def fuzzed():
    data = read("valid_h264_aac_faststart.mp4")
    for seed in range(1, 6):
        rng = random.Random(seed)
        copy = bytearray(data)
        for _ in range(20):
            at = rng.randrange(32, len(copy))
            copy[at] = rng.randrange(256)
        write(f"fuzzed_seed{seed}_20_bytes.mp4", bytes(copy))


def manifest_names():
    here = os.path.dirname(os.path.abspath(__file__))
    names = []
    with open(os.path.join(here, "hostile-corpus.manifest")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                names.append(line.split("\t")[0])
    return names


def main():
    global OUT
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    OUT = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    try:
        bases()
        dimension_bombs()
        frame_count_bombs()
        duration_lies()
        still_image()
        many_tracks()
        tiny_files()
        truncations()
        wrong_magic()
        other_formats()
        polyglots()
        corrupt_nals()
        stream_kinds()
        unsupported()
        nested()
        moov_lies()
        fuzzed()
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"{' '.join(e.cmd)} failed:\n{e.stderr.decode(errors='replace')}")
    for name in os.listdir(OUT):
        if name.startswith("."):
            os.remove(path(name))
    made = sorted(os.listdir(OUT))
    listed = sorted(manifest_names())
    if made != listed:
        raise SystemExit(f"corpus and manifest differ: made but not listed {sorted(set(made) - set(listed))}, "
                         f"listed but not made {sorted(set(listed) - set(made))}")
    print(f"{len(made)} files in {OUT}")


if __name__ == "__main__":
    main()
