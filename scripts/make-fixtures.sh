#!/usr/bin/env bash
# Generate the small media fixtures used by the media tests, and the hostile corpus.
# Usage: scripts/make-fixtures.sh OUT_DIR
# Everything is tiny (<= 4 s, low resolution except the 720p clip) so the suite stays fast.
set -euo pipefail

out="${1:?usage: make-fixtures.sh OUT_DIR}"
mkdir -p "$out"
gst() { gst-launch-1.0 -q "$@" >/dev/null; }

# Mark the first track (video) as rotated 90 degrees clockwise by writing the rotation
# matrix into its tkhd box. taginject image-orientation=rotate-90 does not survive
# mp4mux in GStreamer 1.22, but qtdemux reads this matrix back as that tag.
rotate_90() {
  local file="$1" off ver at
  off=$(grep -obUa "tkhd" "$file" | head -1 | cut -d: -f1)
  ver=$(od -An -tu1 -j $((off + 4)) -N1 "$file" | tr -d ' ')
  if [ "$ver" = 1 ]; then at=$((off + 56)); else at=$((off + 44)); fi
  printf '\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x40\x00\x00\x00' \
    | dd of="$file" bs=1 seek="$at" conv=notrunc status=none
}

# clip NAME WIDTH HEIGHT SECONDS AUDIO(yes|no)
clip() {
  local name="$1" w="$2" h="$3" secs="$4" audio="$5"
  local frames=$((secs * 25))
  local video="videotestsrc num-buffers=$frames pattern=ball background-color=0xff3070b0 ! video/x-raw,format=I420,width=$w,height=$h,framerate=25/1 \
    ! x264enc speed-preset=ultrafast key-int-max=25 bframes=0 ! h264parse"
  if [ "$audio" = yes ]; then
    local samples=$((secs * 48000 / 1024))
    eval gst-launch-1.0 -q mp4mux name=mux faststart=true ! filesink location="$out/$name" \
      $video ! queue ! mux. \
      audiotestsrc num-buffers=$samples samplesperbuffer=1024 wave=sine ! audio/x-raw,rate=48000,channels=2 \
      ! audioconvert ! avenc_aac ! aacparse ! queue ! mux. >/dev/null
  else
    eval gst-launch-1.0 -q mp4mux name=mux faststart=true ! filesink location="$out/$name" \
      $video ! queue ! mux. >/dev/null
  fi
}

clip clip_720p.mp4 1280 720 4 yes
clip portrait_360x640.mp4 360 640 2 yes
clip rotated_90.mp4 640 360 2 yes
rotate_90 "$out/rotated_90.mp4"
clip small_320x180.mp4 320 180 2 yes
clip hd_1080p.mp4 1920 1080 2 yes
clip no_audio.mp4 640 360 2 no

# One second of black, then colour bars: the poster must skip the black start.
gst concat name=c ! videoconvert ! video/x-raw,format=I420 \
  ! x264enc speed-preset=ultrafast key-int-max=25 bitrate=300 ! h264parse ! mp4mux faststart=true \
  ! filesink location="$out/black_start.mp4" \
  videotestsrc num-buffers=25 pattern=black ! video/x-raw,format=I420,width=320,height=180,framerate=25/1 ! c. \
  videotestsrc num-buffers=75 pattern=smpte ! video/x-raw,format=I420,width=320,height=180,framerate=25/1 ! c.

# Audio only (m4a): no video stream at all.
gst audiotestsrc num-buffers=94 samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=2 \
  ! audioconvert ! avenc_aac ! aacparse ! mp4mux ! filesink location="$out/audio_only.m4a"

# A moov-at-end source (no faststart) used to make the truncated variant.
gst videotestsrc num-buffers=50 pattern=smpte ! video/x-raw,width=320,height=180,framerate=25/1 \
  ! x264enc speed-preset=ultrafast ! h264parse ! mp4mux faststart=false ! filesink location="$out/moov_at_end.mp4"

size=$(stat -c %s "$out/small_320x180.mp4")
# Truncated: the header survives, most of the media data is gone.
head -c $((size / 3)) "$out/small_320x180.mp4" > "$out/hostile_truncated.mp4"
# moov at end, cut before the moov box: no index at all.
size_end=$(stat -c %s "$out/moov_at_end.mp4")
head -c $((size_end - size_end / 4)) "$out/moov_at_end.mp4" > "$out/hostile_moov_at_end_truncated.mp4"
rm -f "$out/moov_at_end.mp4"
# Garbage over the media data (the index is intact, the samples are noise).
cp "$out/small_320x180.mp4" "$out/hostile_garbage_mdat.mp4"
dd if=/dev/urandom of="$out/hostile_garbage_mdat.mp4" bs=1 seek=$((size / 3)) count=$((size / 2)) conv=notrunc status=none
# Random bytes with an .mp4 name.
head -c 65536 /dev/urandom > "$out/hostile_random.mp4"
# Zero-length file.
: > "$out/hostile_empty.mp4"

ls -l "$out"
