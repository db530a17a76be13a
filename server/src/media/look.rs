//! Look before decoding: what a file says about itself, read with typefind, the
//! demuxer and the parsers only (`filesrc ! queue ! typefind ! parsebin`), and whether
//! that is on the allow-list and within the limits. No decoder exists while this
//! runs: a frame that declares 16000x16000 is refused from its header, never
//! allocated.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_pbutils as pbutils;
use serde::{Deserialize, Serialize};

use super::pipeline::{discard_pad, error_from_message, make, stop, NullOnDrop};
use super::probe::MediaLimits;
use super::MediaError;

/// Containers we accept, by typefind caps name, with the name a person knows them by.
const CONTAINERS: &[(&str, &str)] = &[
    ("video/quicktime", "MP4/QuickTime"),
    ("audio/x-m4a", "MP4 (audio)"),
    ("application/x-3gp", "3GP (MP4)"),
    ("video/x-matroska", "Matroska"),
    ("audio/x-matroska", "Matroska (audio)"),
    ("video/webm", "WebM"),
    ("audio/webm", "WebM (audio)"),
    ("video/mpegts", "MPEG-TS"),
    ("video/x-msvideo", "AVI"),
    ("application/ogg", "Ogg"),
    ("video/ogg", "Ogg"),
    ("audio/ogg", "Ogg (audio)"),
];

const ACCEPTED_CONTAINERS: &str = "MP4/MOV, Matroska/WebM, MPEG-TS, AVI, Ogg";
const ACCEPTED_VIDEO: &str = "H.264, HEVC, VP8, VP9, AV1, MPEG-4 Part 2";
const ACCEPTED_AUDIO: &str = "AAC, Opus, Vorbis, MP3, FLAC, AC-3, PCM";

/// A stream as its container and parser declare it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeclaredStream {
    pub kind: StreamKind,
    /// Caps name, e.g. "video/x-h264".
    pub caps: String,
    /// A readable codec name, e.g. "H.264" or "MJPEG".
    pub codec: String,
    /// Whether the codec is on the allow-list.
    pub allowed: bool,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Frames per second as a fraction, when declared (0/1 means variable).
    pub frame_rate: Option<(i32, i32)>,
    /// Frames per second over the first parsed buffers' timestamps (video).
    pub measured_fps: Option<f64>,
    /// The highest bit rate the stream declares (caps or tags), bits per second.
    pub bitrate: Option<u64>,
    /// The stream's whole length was read during the look: `frames` is its count.
    #[serde(default)]
    pub complete: bool,
    /// Buffers (frames, for video) the look saw.
    #[serde(default)]
    pub frames: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    Video,
    Audio,
    /// Subtitles, metadata, data: counted as tracks, not decoded.
    Other,
}

/// What a file declares about itself, read without a decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Declared {
    /// Typefind caps name of the outer container, e.g. "video/x-matroska".
    pub container_caps: String,
    /// A readable container name, e.g. "Matroska".
    pub container: String,
    /// Demuxers stacked inside one another (1 for an ordinary file).
    pub demuxers: u32,
    pub streams: Vec<DeclaredStream>,
    /// The container's duration, when it declares one.
    pub duration: Option<Duration>,
    pub file_size: u64,
}

impl Declared {
    /// Refuse containers and codecs that are not on the allow-list, and containers
    /// nested in containers. Limits are not looked at (see [`Declared::check`]).
    pub fn check_allowed(&self) -> Result<(), MediaError> {
        let reject = |reason: String| Err(MediaError::Rejected { reason });
        if !container_allowed(&self.container_caps) {
            return reject(format!(
                "the container {} is not accepted (accepted: {ACCEPTED_CONTAINERS})",
                self.container
            ));
        }
        if self.demuxers > 1 {
            return reject(format!("the {} file holds another container inside it", self.container));
        }
        for stream in self.streams.iter().filter(|s| !s.allowed) {
            if stream.caps.is_empty() {
                return reject(format!("a stream of the {} file has a format that could not be read", self.container));
            }
            match stream.kind {
                StreamKind::Video => {
                    return reject(format!(
                        "the video codec {} is not accepted (accepted: {ACCEPTED_VIDEO})",
                        stream.codec
                    ))
                }
                StreamKind::Audio => {
                    return reject(format!(
                        "the audio codec {} is not accepted (accepted: {ACCEPTED_AUDIO})",
                        stream.codec
                    ))
                }
                StreamKind::Other => {}
            }
        }
        Ok(())
    }

    /// [`Declared::check_allowed`], then the declared size, frame rate, duration,
    /// track count and bit rate against `limits`.
    pub fn check(&self, limits: &MediaLimits) -> Result<(), MediaError> {
        self.check_allowed()?;
        let reject = |reason: String| Err(MediaError::Rejected { reason });
        let tracks = u32::try_from(self.streams.len()).unwrap_or(u32::MAX);
        if tracks > limits.max_tracks {
            return reject(format!("the file has {tracks} tracks, more than the allowed {}", limits.max_tracks));
        }
        if !self.streams.iter().any(|s| s.kind == StreamKind::Video) {
            return reject("the file has no video stream".into());
        }
        for stream in self.streams.iter().filter(|s| s.kind == StreamKind::Video) {
            let (Some(width), Some(height)) = (stream.width, stream.height) else {
                return reject(format!("the {} video stream declares no picture size", stream.codec));
            };
            super::probe::check_picture(width, height, limits)?;
            if let Some((n, d)) = stream.frame_rate.filter(|(n, d)| *n > 0 && *d > 0) {
                let fps = f64::from(n) / f64::from(d);
                if fps > limits.max_fps {
                    return reject(format!(
                        "the frame rate is {fps:.2} fps, more than the allowed {:.0}",
                        limits.max_fps
                    ));
                }
            } else if let Some(fps) = stream.measured_fps.filter(|fps| *fps > limits.max_fps * 1.5) {
                // No declared rate (Matroska, variable rate): the timestamps tell. The
                // margin keeps jittery variable-rate sources within the limit.
                return reject(format!(
                    "the video carries {fps:.0} frames per second, more than the allowed {:.0}",
                    limits.max_fps
                ));
            }
        }
        if let Some(duration) = self.duration {
            super::probe::check_duration(duration, limits)?;
        }
        for stream in self.streams.iter().filter(|s| s.kind == StreamKind::Video) {
            if let Some(fps) = self.pictures_per_second(stream).filter(|fps| *fps < limits.min_fps) {
                return reject(format!(
                    "the video shows a new picture every {:.0} s (a still image), fewer than the required {} per second",
                    1.0 / fps,
                    limits.min_fps
                ));
            }
        }
        for stream in &self.streams {
            if let Some(bitrate) = stream.bitrate.filter(|b| *b > limits.max_bitrate) {
                return reject(format!(
                    "the {} stream declares {} kbit/s, more than the allowed {}",
                    stream.codec,
                    bitrate / 1000,
                    limits.max_bitrate / 1000
                ));
            }
        }
        if let Some(bitrate) = self.average_bitrate().filter(|b| *b > limits.max_bitrate) {
            return reject(format!(
                "the file holds {} kbit/s over its declared duration, more than the allowed {}",
                bitrate / 1000,
                limits.max_bitrate / 1000
            ));
        }
        Ok(())
    }

    /// How many new pictures per second a video stream carries on average: its
    /// declared rate, else its frame count over the duration when the look read it
    /// whole. Not the first timestamps: a variable-rate screen recording may sit on
    /// one picture for a while and still be a video.
    fn pictures_per_second(&self, stream: &DeclaredStream) -> Option<f64> {
        if let Some((n, d)) = stream.frame_rate.filter(|(n, d)| *n > 0 && *d > 0) {
            return Some(f64::from(n) / f64::from(d));
        }
        let duration = self.duration.filter(|d| !d.is_zero());
        if let (true, Some(duration)) = (stream.complete && stream.frames > 0, duration) {
            return Some(f64::from(stream.frames) / duration.as_secs_f64());
        }
        None
    }

    /// File size over declared duration, bits per second.
    pub fn average_bitrate(&self) -> Option<u64> {
        let duration = self.duration.filter(|d| !d.is_zero())?;
        Some((self.file_size as f64 * 8.0 / duration.as_secs_f64()) as u64)
    }
}

fn container_allowed(caps_name: &str) -> bool {
    CONTAINERS.iter().any(|(name, _)| *name == caps_name)
}

/// Whether a parsed stream's codec is on the allow-list.
fn codec_allowed(structure: &gst::StructureRef) -> bool {
    let int = |field: &str| structure.get::<i32>(field).ok();
    match structure.name().as_str() {
        "video/x-h264" | "video/x-h265" | "video/x-vp8" | "video/x-vp9" | "video/x-av1" => true,
        // MPEG-4 Part 2 (and its DivX 4/5 and XviD names), not MPEG-1/2 video.
        "video/mpeg" => int("mpegversion") == Some(4),
        "video/x-divx" => matches!(int("divxversion"), Some(4 | 5)),
        "video/x-xvid" => true,
        // AAC (MPEG-2/4) and MP3 (MPEG-1/2 layer 3), not MP1/MP2.
        "audio/mpeg" => match int("mpegversion") {
            Some(2 | 4) => true,
            Some(1) => int("layer") == Some(3),
            _ => false,
        },
        "audio/x-opus" | "audio/x-vorbis" | "audio/x-flac" | "audio/x-ac3" | "audio/ac3" | "audio/x-raw" => true,
        _ => false,
    }
}

fn container_name(caps: &gst::Caps) -> String {
    let name = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
    match CONTAINERS.iter().find(|(n, _)| *n == name) {
        Some((_, readable)) => (*readable).to_string(),
        None => describe(caps, &name),
    }
}

fn codec_name(caps: &gst::Caps) -> String {
    let Some(s) = caps.structure(0) else { return "unknown".into() };
    let int = |field: &str| s.get::<i32>(field).ok();
    match s.name().as_str() {
        "video/x-h264" => "H.264".into(),
        "video/x-h265" => "HEVC".into(),
        "video/x-vp8" => "VP8".into(),
        "video/x-vp9" => "VP9".into(),
        "video/x-av1" => "AV1".into(),
        "image/jpeg" => "MJPEG".into(),
        "image/png" => "PNG".into(),
        "video/x-ffv" => "FFV1".into(),
        "video/x-prores" => "ProRes".into(),
        "video/x-theora" => "Theora".into(),
        "video/mpeg" if int("mpegversion") == Some(4) => "MPEG-4 Part 2".into(),
        "video/mpeg" => format!("MPEG-{} video", int("mpegversion").unwrap_or(1)),
        "audio/mpeg" if matches!(int("mpegversion"), Some(2 | 4)) => "AAC".into(),
        "audio/mpeg" => format!("MPEG-1 Layer {} (MP{0})", int("layer").unwrap_or(0)),
        "audio/x-opus" => "Opus".into(),
        "audio/x-vorbis" => "Vorbis".into(),
        "audio/x-flac" => "FLAC".into(),
        "audio/x-ac3" | "audio/ac3" => "AC-3".into(),
        "audio/x-raw" => "PCM".into(),
        other => describe(caps, other),
    }
}

/// GStreamer's own description, with the caps name for the record.
fn describe(caps: &gst::Caps, name: &str) -> String {
    let description = pbutils::pb_utils_get_codec_description(caps).to_string();
    if description.is_empty() || description == name {
        name.to_string()
    } else {
        format!("{description} ({name})")
    }
}

/// What the look collects while the pipeline runs (streaming threads write it).
#[derive(Default)]
struct Found {
    container: Mutex<Option<gst::Caps>>,
    /// Set when typefind names a container that is not accepted: stop at once.
    container_refused: AtomicBool,
    demuxers: AtomicU32,
    pads: Mutex<Vec<(gst::Pad, Arc<Mutex<Seen>>)>>,
    /// Set when more streams appear than `MAX_STREAMS`: stop at once.
    too_many_streams: AtomicBool,
    /// When a watched stream last passed a buffer.
    last_buffer: Mutex<Option<Instant>>,
}

impl Found {
    /// Every exposed stream has shown enough (see [`Seen::enough`]). parsebin 1.22
    /// posts neither `no-more-pads` nor `ASYNC_DONE`; it adds every pad of a group in
    /// one go, caps final, and only then lets data through, so once data flows the
    /// set of pads is complete.
    ///
    /// Or data flowed and then stopped for [`QUIET`]: a sparse stream (subtitles) may
    /// not show more before the end of a long file, and GStreamer 1.22's qtdemux was
    /// seen to leave an audio-only file's last stream without its end-of-stream now
    /// and then (2 runs in 25).
    fn all_seen(&self) -> bool {
        let pads = self.pads.lock().unwrap_or_else(|p| p.into_inner());
        if pads.is_empty() {
            return false;
        }
        if pads.iter().all(|(_, seen)| seen.lock().unwrap_or_else(|p| p.into_inner()).enough()) {
            return true;
        }
        let last = *self.last_buffer.lock().unwrap_or_else(|p| p.into_inner());
        last.is_some_and(|at| at.elapsed() >= QUIET)
    }
}

/// Timestamps of the first parsed buffers of one stream, to tell the frame rate of a
/// video whose caps do not declare one (Matroska, variable rate).
#[derive(Default)]
struct Seen {
    buffers: u32,
    first_pts: Option<gst::ClockTime>,
    last_pts: Option<gst::ClockTime>,
    ended: bool,
}

/// Buffers per stream read before stopping (timestamps for the frame rate).
const SAMPLE_BUFFERS: u32 = 48;

/// How long data may stop flowing before the look takes what it has seen.
const QUIET: Duration = Duration::from_millis(500);

impl Seen {
    fn enough(&self) -> bool {
        self.ended || self.buffers >= SAMPLE_BUFFERS
    }

    /// Frames per second over the buffers seen (presentation order aside: the
    /// smallest and largest timestamps bound the span).
    fn measured_fps(&self) -> Option<f64> {
        let (first, last) = (self.first_pts?, self.last_pts?);
        let span = last.checked_sub(first)?.nseconds();
        (self.buffers >= 8 && span > 0).then(|| f64::from(self.buffers - 1) * 1e9 / span as f64)
    }
}

/// Streams beyond this are not even linked: the look stops and the file is refused
/// whatever the configured track limit (which is far lower in practice).
const MAX_STREAMS: usize = 64;

const POLL: Duration = Duration::from_millis(20);

/// Read what `path` declares with typefind, demuxers and parsers only, within
/// `deadline` (`timeout` is reported when it passes).
pub fn look(path: &std::path::Path, deadline: Instant, timeout: Duration) -> Result<Declared, MediaError> {
    let file_size =
        std::fs::metadata(path).map_err(|e| MediaError::io(format!("reading {}", path.display()), e))?.len();
    let pipeline = super::pipeline::new_pipeline("look");
    let _null = NullOnDrop(pipeline.clone());
    let src = make("filesrc", Some("source"))?;
    src.set_property("location", path.to_string_lossy().to_string());
    // Push mode: in pull mode GStreamer 1.22's qtdemux was seen to stop on a moov-less
    // file without posting its error, leaving the caller to time out.
    let queue = make("queue", Some("push-mode"))?;
    let typefind = make("typefind", Some("typefind"))?;
    let parse = make("parsebin", Some("parse"))?;
    pipeline.add_many([&src, &queue, &typefind, &parse])?;
    gst::Element::link_many([&src, &queue, &typefind, &parse])?;

    let found = Arc::new(Found::default());
    {
        let found = found.clone();
        typefind.connect("have-type", false, move |args| {
            if let Some(caps) = args.get(2).and_then(|v| v.get::<gst::Caps>().ok()) {
                let name = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
                if !container_allowed(&name) {
                    found.container_refused.store(true, Ordering::SeqCst);
                }
                *found.container.lock().unwrap_or_else(|p| p.into_inner()) = Some(caps);
            }
            None
        });
    }
    if let Some(bin) = parse.downcast_ref::<gst::Bin>() {
        let found = found.clone();
        bin.connect_deep_element_added(move |_, _, element| {
            let klass = element.factory().map(|f| f.klass().to_string()).unwrap_or_default();
            // Tag readers (id3demux, apedemux) are "Demuxer/Metadata": not a container.
            if klass.contains("Demux") && !klass.contains("Metadata") {
                found.demuxers.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    {
        let found = found.clone();
        let weak = pipeline.downgrade();
        parse.connect_pad_added(move |_, pad| {
            let mut pads = found.pads.lock().unwrap_or_else(|p| p.into_inner());
            if pads.len() >= MAX_STREAMS {
                found.too_many_streams.store(true, Ordering::SeqCst);
                return;
            }
            let seen = Arc::new(Mutex::new(Seen::default()));
            pads.push((pad.clone(), seen.clone()));
            drop(pads);
            let found = found.clone();
            pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                match &info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => {
                        *found.last_buffer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                        seen.buffers += 1;
                        if let Some(pts) = buffer.pts() {
                            seen.first_pts = Some(seen.first_pts.map_or(pts, |t| t.min(pts)));
                            seen.last_pts = Some(seen.last_pts.map_or(pts, |t| t.max(pts)));
                        }
                    }
                    Some(gst::PadProbeData::Event(event)) if event.type_() == gst::EventType::Eos => seen.ended = true,
                    _ => {}
                }
                if seen.enough() {
                    gst::PadProbeReturn::Remove
                } else {
                    gst::PadProbeReturn::Ok
                }
            });
            if let Some(pipeline) = weak.upgrade() {
                if let Err(e) = discard_pad(&pipeline, pad) {
                    tracing::warn!(error = %e, "the look could not link a stream");
                }
            }
        });
    }

    let bus = pipeline.bus().ok_or_else(|| MediaError::Build("the pipeline has no bus".into()))?;
    // Playing, not paused: a paused sink holds its stream after one buffer, and with
    // one demuxer thread that starves the other streams. Parsers only, so data flows
    // as fast as the file is read, and the look stops once every stream has shown
    // its caps and a few buffers.
    let _ = pipeline.set_state(gst::State::Playing);
    let outcome = loop {
        if found.container_refused.load(Ordering::SeqCst)
            || found.too_many_streams.load(Ordering::SeqCst)
            || found.all_seen()
        {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(MediaError::Timeout(timeout));
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(POLL.as_millis() as u64)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(err) => break Err(error_from_message(err)),
            gst::MessageView::Eos(_) => break Ok(()),
            _ => {}
        }
    };
    let duration = pipeline.query_duration::<gst::ClockTime>().map(|d| Duration::from_nanos(d.nseconds()));
    let pads = found.pads.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let streams: Vec<DeclaredStream> =
        pads.iter().map(|(pad, seen)| declared_stream(pad, &seen.lock().unwrap_or_else(|p| p.into_inner()))).collect();
    stop(&pipeline);

    let container = found.container.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(container) = container else {
        return Err(match outcome {
            Err(MediaError::Timeout(t)) => MediaError::Timeout(t),
            _ => MediaError::Unreadable { reason: "the file's format is not recognised".into() },
        });
    };
    let declared = Declared {
        container_caps: container.structure(0).map(|s| s.name().to_string()).unwrap_or_default(),
        container: container_name(&container),
        demuxers: found.demuxers.load(Ordering::SeqCst),
        streams,
        duration,
        file_size,
    };
    if found.container_refused.load(Ordering::SeqCst) {
        declared.check_allowed()?;
    }
    if found.too_many_streams.load(Ordering::SeqCst) {
        return Err(MediaError::Rejected { reason: format!("the file has more than {MAX_STREAMS} tracks") });
    }
    match outcome {
        Ok(()) => {}
        Err(MediaError::Pipeline { reason, element, .. }) => {
            // A refused codec or nesting says more than the demuxer's complaint.
            declared.check_allowed()?;
            tracing::debug!(element, reason, "the look failed");
            return Err(MediaError::Unreadable {
                reason: format!("the {} container could not be read ({reason})", declared.container),
            });
        }
        Err(other) => return Err(other),
    }
    if declared.streams.is_empty() {
        declared.check_allowed()?;
        return Err(MediaError::Unreadable {
            reason: format!("no stream could be read from the {} container", declared.container),
        });
    }
    Ok(declared)
}

/// The caps and tags a parsebin output pad carries.
fn declared_stream(pad: &gst::Pad, seen: &Seen) -> DeclaredStream {
    let caps = pad.current_caps();
    let (Some(caps), Some(s)) = (caps.as_ref(), caps.as_ref().and_then(|c| c.structure(0))) else {
        // A stream that never showed its caps is not one we can vouch for.
        return DeclaredStream {
            kind: StreamKind::Other,
            caps: String::new(),
            codec: "unknown".into(),
            allowed: false,
            width: None,
            height: None,
            frame_rate: None,
            measured_fps: None,
            bitrate: None,
            complete: seen.ended,
            frames: seen.buffers,
        };
    };
    let name = s.name().to_string();
    let kind = if name.starts_with("video/") || name.starts_with("image/") {
        StreamKind::Video
    } else if name.starts_with("audio/") {
        StreamKind::Audio
    } else {
        StreamKind::Other
    };
    let positive = |field: &str| s.get::<i32>(field).ok().and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
    let frame_rate = s.get::<gst::Fraction>("framerate").ok().map(|f| (f.numer(), f.denom()));
    let mut bitrate = ["bitrate", "max-bitrate"]
        .iter()
        .filter_map(|f| {
            let field: &str = f;
            s.get::<u32>(field).ok().or_else(|| s.get::<i32>(field).ok().and_then(|v| u32::try_from(v).ok()))
        })
        .map(u64::from)
        .max();
    let mut idx = 0;
    while let Some(event) = pad.sticky_event::<gst::event::Tag>(idx) {
        let tags = event.tag();
        let declared = [
            tags.get::<gst::tags::Bitrate>().map(|v| v.get()),
            tags.get::<gst::tags::MaximumBitrate>().map(|v| v.get()),
            tags.get::<gst::tags::NominalBitrate>().map(|v| v.get()),
        ];
        for value in declared.into_iter().flatten() {
            bitrate = Some(bitrate.unwrap_or(0).max(u64::from(value)));
        }
        idx += 1;
    }
    DeclaredStream {
        kind,
        codec: codec_name(caps),
        allowed: codec_allowed(s),
        caps: name,
        width: positive("width"),
        height: positive("height"),
        frame_rate,
        measured_fps: if kind == StreamKind::Video { seen.measured_fps() } else { None },
        bitrate: bitrate.filter(|b| *b > 0),
        complete: seen.ended,
        frames: seen.buffers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264(width: u32, height: u32) -> DeclaredStream {
        DeclaredStream {
            kind: StreamKind::Video,
            caps: "video/x-h264".into(),
            codec: "H.264".into(),
            allowed: true,
            width: Some(width),
            height: Some(height),
            frame_rate: Some((25, 1)),
            measured_fps: Some(25.0),
            bitrate: None,
            complete: false,
            frames: 48,
        }
    }

    fn mp4(streams: Vec<DeclaredStream>) -> Declared {
        Declared {
            container_caps: "video/quicktime".into(),
            container: "MP4/QuickTime".into(),
            demuxers: 1,
            streams,
            duration: Some(Duration::from_secs(10)),
            file_size: 1_000_000,
        }
    }

    fn reason(declared: &Declared) -> String {
        match declared.check(&MediaLimits::default()) {
            Err(MediaError::Rejected { reason }) => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_clip_passes() {
        mp4(vec![h264(1280, 720)]).check(&MediaLimits::default()).expect("accepted");
    }

    #[test]
    fn refusals_name_what_was_found() {
        let mut nested = mp4(vec![h264(640, 360)]);
        nested.demuxers = 2;
        assert!(reason(&nested).contains("another container"));

        let mut ps = mp4(vec![h264(640, 360)]);
        ps.container_caps = "video/mpeg".into();
        ps.container = "MPEG-2 System Stream".into();
        assert!(reason(&ps).contains("the container MPEG-2 System Stream is not accepted"));

        let mut mjpeg = h264(16000, 16000);
        (mjpeg.caps, mjpeg.codec, mjpeg.allowed) = ("image/jpeg".into(), "MJPEG".into(), false);
        // The codec is refused before its size is even looked at.
        assert!(reason(&mp4(vec![mjpeg])).contains("the video codec MJPEG is not accepted"));

        let mut no_size = h264(0, 0);
        (no_size.width, no_size.height) = (None, None);
        assert!(reason(&mp4(vec![no_size])).contains("declares no picture size"));

        assert!(reason(&mp4(vec![h264(8000, 8000)])).contains("8000x8000"));
    }

    #[test]
    fn frame_rate_is_declared_or_measured() {
        let mut declared = h264(320, 180);
        declared.frame_rate = Some((1000, 1));
        assert!(reason(&mp4(vec![declared])).contains("1000.00 fps"));

        // No declared rate (Matroska): the timestamps tell, with a margin for jitter.
        let mut measured = h264(320, 180);
        (measured.frame_rate, measured.measured_fps) = (Some((0, 1)), Some(1000.0));
        assert!(reason(&mp4(vec![measured.clone()])).contains("1000 frames per second"));
        measured.measured_fps = Some(150.0);
        mp4(vec![measured]).check(&MediaLimits::default()).expect("within the margin");
    }

    #[test]
    fn a_still_image_shown_for_hours_is_refused() {
        let hours = |mut declared: Declared| {
            declared.duration = Some(Duration::from_secs(3 * 3600));
            declared
        };
        // MP4 declares the rate its sample table implies: one frame in three hours.
        let mut still = h264(320, 180);
        still.frame_rate = Some((1, 10800));
        assert!(reason(&hours(mp4(vec![still]))).contains("every 10800 s (a still image)"));

        // No declared rate: the look read the whole stream, one frame.
        let mut counted = h264(320, 180);
        (counted.frame_rate, counted.complete, counted.frames) = (Some((0, 1)), true, 1);
        assert!(reason(&hours(mp4(vec![counted.clone()]))).contains("(a still image)"));

        // One picture every few seconds (a slideshow, audio with a cover) passes, and
        // so does a stream the look did not read whole, whatever its first frames.
        counted.frames = 3 * 3600 / 5;
        hours(mp4(vec![counted.clone()])).check(&MediaLimits::default()).expect("a slideshow");
        (counted.complete, counted.frames, counted.measured_fps) = (false, 8, Some(0.01));
        hours(mp4(vec![counted])).check(&MediaLimits::default()).expect("not read whole");
        // The check can be turned off.
        let mut still = h264(320, 180);
        still.frame_rate = Some((1, 10800));
        let off = MediaLimits { min_fps: 0.0, ..MediaLimits::default() };
        hours(mp4(vec![still])).check(&off).expect("min_fps = 0");
    }

    #[test]
    fn bit_rate_declared_or_averaged() {
        let mut loud = h264(320, 180);
        loud.bitrate = Some(1_000_000_000);
        assert!(reason(&mp4(vec![loud])).contains("1000000 kbit/s"));

        // 100 MB said to last 1 s: 800 Mbit/s on average.
        let mut short = mp4(vec![h264(320, 180)]);
        (short.file_size, short.duration) = (100_000_000, Some(Duration::from_secs(1)));
        assert!(reason(&short).contains("over its declared duration"));
    }

    #[test]
    fn tracks_and_streams() {
        let audio =
            DeclaredStream { kind: StreamKind::Audio, caps: "audio/mpeg".into(), codec: "AAC".into(), ..h264(0, 0) };
        let many = mp4(std::iter::once(h264(320, 180)).chain(std::iter::repeat_n(audio.clone(), 9)).collect());
        assert!(reason(&many).contains("10 tracks"));
        assert!(reason(&mp4(vec![audio])).contains("no video stream"));
        let unknown = DeclaredStream { caps: String::new(), allowed: false, kind: StreamKind::Other, ..h264(0, 0) };
        assert!(reason(&mp4(vec![h264(320, 180), unknown])).contains("could not be read"));
    }
}
