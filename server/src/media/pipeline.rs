//! The one loop that drives a pipeline's bus: errors, EOS, cancel, timeout, ticks.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::MediaError;

/// Progress of a running encode, reported at most every `progress_interval`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// 0..=100 over the whole source.
    pub percent: f64,
    pub position: Duration,
    pub duration: Option<Duration>,
    /// Source frames processed per second (wall clock).
    pub fps: f64,
    pub eta: Option<Duration>,
    /// Per rendition (empty for single-output encodes).
    pub rungs: Vec<RungProgress>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RungProgress {
    pub name: String,
    pub percent: f64,
}

/// Nice value of streaming threads (see [`new_pipeline`]); 0 leaves them as they are.
static STREAMING_NICE: AtomicI32 = AtomicI32::new(0);

/// The nice value (0..=19) that every pipeline built afterwards gives its streaming
/// threads. Process-wide, as thread priorities are; set once at startup.
pub fn set_streaming_nice(nice: i32) {
    STREAMING_NICE.store(nice.clamp(0, 19), Ordering::Relaxed);
}

/// A new, empty pipeline whose streaming threads run at the nice value set with
/// [`set_streaming_nice`]. Encoders start their own threads from a streaming thread
/// (x264's, libav's), and a new thread inherits its creator's nice value, so the
/// whole encode runs at that priority: on a machine that also serves the API, an
/// encode takes what CPU the requests leave instead of queueing them behind it.
pub(crate) fn new_pipeline(name: &str) -> gst::Pipeline {
    let pipeline = gst::Pipeline::with_name(name);
    lower_streaming_priority(&pipeline, STREAMING_NICE.load(Ordering::Relaxed));
    pipeline
}

/// GStreamer posts `STREAM_STATUS` / `ENTER` from each streaming thread as it starts
/// a task; the bus's sync handler runs in that thread, where the thread can renice
/// itself. (The pipelines here read their bus by polling, so the handler is free.)
fn lower_streaming_priority(pipeline: &gst::Pipeline, nice: i32) {
    if nice <= 0 {
        return;
    }
    let Some(bus) = pipeline.bus() else {
        return;
    };
    bus.set_sync_handler(move |_, msg| {
        if let gst::MessageView::StreamStatus(status) = msg.view() {
            if status.get().0 == gst::StreamStatusType::Enter {
                renice_current_thread(nice);
            }
        }
        gst::BusSyncReply::Pass
    });
}

/// Raise the calling thread's nice value to `nice` (never lower it: that takes a
/// privilege, and a process started nicer than configured stays so). Linux keeps a
/// nice value per thread, so `setpriority` on the thread id touches this thread only.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn renice_current_thread(nice: i32) {
    let current = thread_nice();
    if current.is_some_and(|current| current >= nice) {
        return;
    }
    // SAFETY: plain system calls on the calling thread's own id.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), nice, "could not renice a streaming thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn renice_current_thread(_nice: i32) {}

/// The calling thread's nice value (`getpriority` can return -1 legitimately, so
/// errno tells failure apart).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn thread_nice() -> Option<i32> {
    // SAFETY: errno is thread-local; getpriority only reads the thread's own entry.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
        (nice != -1 || *libc::__errno_location() == 0).then_some(nice)
    }
}

/// Puts the pipeline into `Null` whatever way the owner leaves (see [`stop`]).
pub(crate) struct NullOnDrop(pub gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        stop(&self.0);
    }
}

/// How long a pipeline gets to reach `Null` before it is abandoned.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// Bring `pipeline` to `Null`, waiting at most [`STOP_GRACE`]; false if abandoned.
pub(crate) fn stop(pipeline: &gst::Pipeline) -> bool {
    stop_within(pipeline, STOP_GRACE)
}

/// Bring `pipeline` to `Null` on a thread of its own and wait for it at most `grace`.
///
/// Stopping a pipeline mid-stream can deadlock inside GStreamer. Seen with GStreamer
/// 1.22's hlssink2: when a ladder was cancelled or timed out just after it started,
/// the state change waited for the stream lock of splitmuxsink's internal queue while
/// that queue's thread waited, inside splitmuxsink's pad probe, for a signal that
/// never came. The job then never finished and the process could not exit. So the
/// transition runs on its own thread; if it has not finished within `grace`, the
/// pipeline is left to that thread (logged, and counted in
/// `reelhouse_media_pipelines_abandoned_total`): its threads and memory stay until
/// the process exits, and the caller goes on. Returns whether `Null` was reached.
pub(crate) fn stop_within(pipeline: &gst::Pipeline, grace: Duration) -> bool {
    match (pipeline.current_state(), pipeline.pending_state()) {
        (gst::State::Null, gst::State::VoidPending) => return true,
        // A stop is under way on another thread (one abandoned earlier): no second wait.
        (_, gst::State::Null) => return false,
        _ => {}
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let target = pipeline.clone();
    let spawned = std::thread::Builder::new().name("gst-stop".into()).spawn(move || {
        let _ = target.set_state(gst::State::Null);
        let _ = done_tx.send(());
    });
    if spawned.is_err() {
        // No thread to spare: stop on this one, unbounded.
        let _ = pipeline.set_state(gst::State::Null);
        return true;
    }
    if done_rx.recv_timeout(grace).is_ok() {
        return true;
    }
    metrics::counter!("reelhouse_media_pipelines_abandoned_total").increment(1);
    tracing::error!(
        pipeline = %pipeline.name(),
        grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        "a GStreamer pipeline did not stop in time and was abandoned; its threads and memory stay until the process exits"
    );
    false
}

pub(crate) struct Limits<'a> {
    pub cancel: &'a AtomicBool,
    pub deadline: Instant,
    pub timeout: Duration,
}

impl Limits<'_> {
    pub fn check(&self) -> Result<(), MediaError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(MediaError::Cancelled);
        }
        if Instant::now() >= self.deadline {
            return Err(MediaError::Timeout(self.timeout));
        }
        Ok(())
    }
}

/// Turn an ERROR message into a typed error naming the failing element.
pub(crate) fn error_from_message(err: &gst::message::Error) -> MediaError {
    let element = err.src().map(|s| s.name().to_string()).unwrap_or_else(|| "unknown".into());
    let path = err.src().map(|s| s.path_string().to_string());
    let debug = match (path, err.debug()) {
        (Some(p), Some(d)) => Some(format!("{p}: {d}")),
        (Some(p), None) => Some(p),
        (None, d) => d.map(|d| d.to_string()),
    };
    MediaError::Pipeline { element, reason: err.error().to_string(), debug }
}

const POLL: Duration = Duration::from_millis(50);

/// A receiver of GStreamer warnings (element name, message) besides the tracing log.
pub type WarningSink = Box<dyn Fn(&str, &str) + Send + Sync>;

/// Set once by the jail child, which relays warnings to its parent (and so into the
/// job's log); unset elsewhere.
static WARNING_SINK: std::sync::OnceLock<WarningSink> = std::sync::OnceLock::new();

/// Send this process's pipeline warnings to `sink` too (the first call wins).
pub fn forward_warnings(sink: WarningSink) {
    let _ = WARNING_SINK.set(sink);
}

/// Play `pipeline` to EOS. `on_tick` runs every `tick` with the pipeline playing.
/// On error, cancel or timeout the pipeline is flushed and set to `Null` (see [`stop`])
/// before returning. The flush wakes streaming threads parked mid-stream first. With
/// four ladders at a time each timed out 300 ms after starting, stopping without it
/// stuck in 2 of 240 runs (the hlssink2 deadlock [`stop_within`] describes), and in
/// none of 800 with it.
pub(crate) fn run_to_eos(
    pipeline: &gst::Pipeline,
    limits: &Limits<'_>,
    tick: Duration,
    on_tick: &mut dyn FnMut() -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    let result = drive(pipeline, limits, tick, on_tick);
    if result.is_err() {
        let _ = pipeline.send_event(gst::event::FlushStart::new());
    }
    stop(pipeline);
    result
}

fn drive(
    pipeline: &gst::Pipeline,
    limits: &Limits<'_>,
    tick: Duration,
    on_tick: &mut dyn FnMut() -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    let bus = pipeline.bus().ok_or_else(|| MediaError::Build("the pipeline has no bus".into()))?;
    if pipeline.set_state(gst::State::Playing).is_err() {
        return Err(startup_error(&bus, pipeline));
    }
    let mut next_tick = Instant::now() + tick;
    loop {
        limits.check()?;
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(POLL.as_millis() as u64)) {
            match msg.view() {
                gst::MessageView::Eos(_) => return Ok(()),
                gst::MessageView::Error(err) => return Err(error_from_message(err)),
                gst::MessageView::Warning(w) => {
                    tracing::warn!(element = ?w.src().map(|s| s.name()), warning = %w.error(), "pipeline warning");
                    if let Some(sink) = WARNING_SINK.get() {
                        let element = w.src().map(|s| s.name().to_string()).unwrap_or_else(|| "unknown".into());
                        sink(&element, &w.error().to_string());
                    }
                }
                _ => {}
            }
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + tick;
            on_tick()?;
        }
    }
}

/// The state change failed: the bus usually holds the reason.
fn startup_error(bus: &gst::Bus, pipeline: &gst::Pipeline) -> MediaError {
    if let Some(msg) = bus.timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Error]) {
        if let gst::MessageView::Error(err) = msg.view() {
            return error_from_message(err);
        }
    }
    MediaError::Pipeline {
        element: pipeline.name().to_string(),
        reason: "the pipeline could not start".into(),
        debug: None,
    }
}

/// Wait until a state change or flushing seek completes (`ASYNC_DONE`), surfacing errors.
pub(crate) fn wait_async_done(pipeline: &gst::Pipeline, limits: &Limits<'_>) -> Result<(), MediaError> {
    let bus = pipeline.bus().ok_or_else(|| MediaError::Build("the pipeline has no bus".into()))?;
    loop {
        limits.check()?;
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(POLL.as_millis() as u64)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::AsyncDone(_) => return Ok(()),
            gst::MessageView::Error(err) => return Err(error_from_message(err)),
            gst::MessageView::Eos(_) => {
                return Err(MediaError::Unreadable { reason: "the stream ended before a picture was decoded".into() })
            }
            _ => {}
        }
    }
}

/// Make an element by factory name, with a readable error when the plugin is missing.
pub(crate) fn make(factory: &str, name: Option<&str>) -> Result<gst::Element, MediaError> {
    let mut builder = gst::ElementFactory::make(factory);
    if let Some(name) = name {
        builder = builder.name(name);
    }
    builder.build().map_err(|e| MediaError::Build(format!("GStreamer element {factory} is not available: {e}")))
}

/// Link `pad` (a decoder output) to a sink that discards it, so unused streams never
/// stall or fail the pipeline.
pub(crate) fn discard_pad(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<(), MediaError> {
    let sink = gst::ElementFactory::make("fakesink").property("sync", false).property("async", false).build()?;
    pipeline.add(&sink)?;
    sink.sync_state_with_parent()?;
    let sink_pad = sink.static_pad("sink").ok_or_else(|| MediaError::Build("fakesink has no sink pad".into()))?;
    pad.link(&sink_pad).map_err(|e| MediaError::Build(format!("linking a discarded stream: {e:?}")))?;
    Ok(())
}

/// Decoders conceal corrupt data forever by default (max-errors = -1); a source with
/// a run of undecodable frames is broken, so let the decoder fail the pipeline.
pub(crate) fn limit_decoder_errors(bin: &gst::Element, max_errors: i32) {
    if let Some(bin) = bin.downcast_ref::<gst::Bin>() {
        bin.connect_deep_element_added(move |_, _, element| {
            if element.find_property("max-errors").is_some() {
                element.set_property("max-errors", max_errors);
            }
        });
    }
}

/// Nanoseconds of a `Duration`, saturating.
pub(crate) fn clock_time(d: Duration) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

// Element helpers shared by the ladder, the downloads and the thumbnails.

/// More than half a second and 10% short of the probed duration.
pub(crate) fn ended_early(reached: Duration, expected: Duration) -> bool {
    let missing = expected.saturating_sub(reached);
    missing > Duration::from_millis(500) && missing.as_secs_f64() > expected.as_secs_f64() * 0.1
}

/// `audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2`, added to
/// `pipeline` and linked; returns its first and last element. Every audio encoder
/// branch (HLS AAC, MP4 AAC, WebM Opus) starts from this.
pub(crate) fn audio_normalizer(pipeline: &gst::Pipeline) -> Result<(gst::Element, gst::Element), MediaError> {
    let convert = make("audioconvert", Some("audio-convert"))?;
    let resample = make("audioresample", Some("audio-resample"))?;
    let caps = caps_filter(
        "audio-format",
        gst::Caps::builder("audio/x-raw").field("rate", 48_000i32).field("channels", 2i32).build(),
    )?;
    pipeline.add_many([&convert, &resample, &caps])?;
    gst::Element::link_many([&convert, &resample, &caps])?;
    Ok((convert, caps))
}

/// `videoconvert ! videoflip(automatic) ! videoscale(method) ! videoconvert !
/// caps(format, width x height, square pixels)`: decoded video upright and at size.
/// The elements in link order, neither added nor linked.
/// The `videoscale` method every downscale uses (ladder rungs, MP4, thumbnails):
/// GStreamer's multi-tap bilinear, which widens its kernel with the shrink ratio as
/// ffmpeg's `flags=bilinear` does. The 2-tap `bilinear` aliased when shrinking
/// 1080p 2.25x/3x and cost 0.47/0.98 dB PSNR at 480p/360p against ffmpeg's ladder;
/// this one matches it within 0.05 dB at every rung, for about 11 % more encode CPU
/// (docs/BENCHMARKS.md, "Quality parity").
pub const SCALE_METHOD: &str = "bilinear2";

pub(crate) fn upright_at_size(
    format: &str,
    width: u32,
    height: u32,
    method: &str,
) -> Result<[gst::Element; 5], MediaError> {
    let convert = make("videoconvert", Some("video-convert"))?;
    let flip = make("videoflip", Some("rotate"))?;
    flip.set_property_from_str("method", "automatic");
    let scale = make("videoscale", Some("scale"))?;
    scale.set_property_from_str("method", method);
    let convert_out = make("videoconvert", Some("video-convert-out"))?;
    let size = caps_filter(
        "size",
        gst::Caps::builder("video/x-raw")
            .field("format", format)
            .field("width", i32::try_from(width).unwrap_or(i32::MAX))
            .field("height", i32::try_from(height).unwrap_or(i32::MAX))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    )?;
    Ok([convert, flip, scale, convert_out, size])
}

/// A `capsfilter` named `name` that lets only `caps` through.
pub(crate) fn caps_filter(name: &str, caps: gst::Caps) -> Result<gst::Element, MediaError> {
    let filter = make("capsfilter", Some(name))?;
    filter.set_property("caps", caps);
    Ok(filter)
}

/// x264 at `kbps` with a keyframe every `keyint` frames exactly (no scene cuts, no
/// B-frames), so every rung's keyframes line up.
pub(crate) fn x264_encoder(
    name: &str,
    kbps: u32,
    keyint: u32,
    speed_preset: &str,
    tune: Option<&str>,
) -> Result<gst::Element, MediaError> {
    let enc = make("x264enc", Some(name))?;
    enc.set_property("bitrate", kbps.max(1));
    enc.set_property("key-int-max", keyint);
    enc.set_property("bframes", 0u32);
    enc.set_property_from_str("speed-preset", speed_preset);
    if let Some(tune) = tune {
        enc.set_property_from_str("tune", tune);
    }
    // No scene-cut keyframes: keyframes only every key-int-max frames, aligned across rungs.
    enc.set_property("option-string", format!("scenecut=0:keyint_min={keyint}"));
    Ok(enc)
}

/// Link `src`'s static pad `src_pad` to `sink_pad`.
pub(crate) fn link_pads(src: &gst::Element, src_pad: &str, sink_pad: &gst::Pad) -> Result<(), MediaError> {
    let pad =
        src.static_pad(src_pad).ok_or_else(|| MediaError::Build(format!("{} has no {src_pad} pad", src.name())))?;
    pad.link(sink_pad)
        .map(|_| ())
        .map_err(|e| MediaError::Build(format!("linking {} to {}: {e:?}", src.name(), sink_pad.name())))
}

/// Link `src_pad` to `sink`'s sink pad.
pub(crate) fn link_pads_to(src_pad: &gst::Pad, sink: &gst::Element) -> Result<(), MediaError> {
    let pad = sink.static_pad("sink").ok_or_else(|| MediaError::Build(format!("{} has no sink pad", sink.name())))?;
    src_pad
        .link(&pad)
        .map(|_| ())
        .map_err(|e| MediaError::Build(format!("linking {} to {}: {e:?}", src_pad.name(), sink.name())))
}

/// Link decoded streams as they appear: the first video and (if wanted) the first audio
/// stream; everything else is discarded.
pub(crate) fn connect_decoder(
    pipeline: &gst::Pipeline,
    decode: &gst::Element,
    video_head: &gst::Element,
    audio_head: Option<&gst::Element>,
) {
    let pipeline = pipeline.downgrade();
    let video_sink = video_head.static_pad("sink");
    let audio_sink = audio_head.and_then(|a| a.static_pad("sink"));
    decode.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline.upgrade() else { return };
        let kind = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
            .unwrap_or_default();
        let target = if kind.starts_with("video/") {
            video_sink.as_ref()
        } else if kind.starts_with("audio/") {
            audio_sink.as_ref()
        } else {
            None
        };
        let linked = match target {
            Some(sink) if !sink.is_linked() => pad.link(sink).is_ok(),
            _ => false,
        };
        if !linked {
            if let Err(e) = discard_pad(&pipeline, pad) {
                tracing::warn!(error = %e, stream = %kind, "could not discard an unused stream");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Mutex;

    use super::*;

    fn test_pipeline(description: &str) -> gst::Pipeline {
        crate::media::ensure_gstreamer().expect("GStreamer initialises");
        gst::parse::launch(description).expect("pipeline parses").downcast::<gst::Pipeline>().expect("a pipeline")
    }

    /// Nice values of this process's threads, from `/proc/self/task/*/stat`.
    fn thread_nice_values() -> Vec<i32> {
        let mut values = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task").flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            // Fields after the command name (which may hold spaces) start at field 3;
            // nice is field 19.
            let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
            if let Some(nice) = after_name.split_whitespace().nth(16).and_then(|v| v.parse().ok()) {
                values.push(nice);
            }
        }
        values
    }

    /// Streaming threads renice themselves as they start, and the threads an encoder
    /// starts from them (x264's) inherit it; the threads that build and drive the
    /// pipeline keep their priority.
    #[test]
    fn streaming_and_encoder_threads_run_at_the_configured_nice_value() {
        crate::media::ensure_gstreamer().expect("GStreamer initialises");
        // Relative to wherever the test runs (CI may itself run under `nice`).
        let base = thread_nice().expect("this thread's nice value");
        let target = (base + 5).min(19);
        assert!(target > base, "the test needs to start below nice 19 (was {base})");
        let pipeline = new_pipeline("nice-test");
        lower_streaming_priority(&pipeline, target);
        let bin = gst::parse::bin_from_description(
            "videotestsrc num-buffers=300 ! video/x-raw,width=320,height=240 ! x264enc threads=3 speed-preset=ultrafast \
             ! queue name=q ! fakesink sync=false",
            false,
        )
        .expect("bin parses");
        pipeline.add(&bin).expect("bin added");

        // At the 30th encoded buffer: the nice value of the queue's streaming thread,
        // and of every thread in the process while the encoder runs.
        let (seen_tx, seen_rx) = mpsc::channel::<(Option<i32>, Vec<i32>)>();
        let seen_tx = Mutex::new(Some(seen_tx));
        let count = std::sync::atomic::AtomicU32::new(0);
        let queue_src = bin.by_name("q").and_then(|q| q.static_pad("src")).expect("queue src pad");
        queue_src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            if count.fetch_add(1, Ordering::Relaxed) == 30 {
                if let Some(tx) = seen_tx.lock().unwrap().take() {
                    let _ = tx.send((thread_nice(), thread_nice_values()));
                }
            }
            gst::PadProbeReturn::Ok
        });
        pipeline.set_state(gst::State::Playing).expect("plays");
        let (streaming, all) = seen_rx.recv_timeout(Duration::from_secs(60)).expect("30 buffers were encoded");
        assert!(stop(&pipeline));

        assert_eq!(streaming, Some(target), "the queue's streaming thread was not reniced");
        // videotestsrc's and the queue's streaming threads, and x264's own threads.
        let niced = all.iter().filter(|&&n| n == target).count();
        assert!(niced >= 4, "expected the streaming and encoder threads at nice {target}, got {all:?}");
        assert!(all.contains(&base), "the test's own threads kept their priority: {all:?}");
        assert_eq!(thread_nice(), Some(base), "the driving thread was reniced");
    }

    #[test]
    fn a_running_pipeline_stops() {
        let pipeline = test_pipeline("videotestsrc ! queue ! fakesink");
        pipeline.set_state(gst::State::Playing).expect("plays");
        assert!(stop_within(&pipeline, STOP_GRACE));
        assert_eq!(pipeline.current_state(), gst::State::Null);
        // Already stopped: nothing to wait for.
        assert!(stop_within(&pipeline, Duration::ZERO));
    }

    /// A streaming thread that never returns from a pad probe holds its stream lock,
    /// so the state change to Null cannot finish: the GStreamer deadlock in miniature.
    #[test]
    fn a_pipeline_stuck_in_its_state_change_is_abandoned_and_not_waited_for() {
        let pipeline = test_pipeline("videotestsrc ! queue name=q ! fakesink");
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
        let queue_src = pipeline.by_name("q").and_then(|q| q.static_pad("src")).expect("queue src pad");
        queue_src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let _ = entered_tx.lock().unwrap().send(());
            // Blocks until the test lets go (then returns at once: the sender is gone).
            let _ = release_rx.lock().unwrap().recv();
            gst::PadProbeReturn::Ok
        });
        let _ = pipeline.set_state(gst::State::Playing);
        entered_rx.recv_timeout(Duration::from_secs(60)).expect("a buffer reached the probe");

        assert!(!stop_within(&pipeline, Duration::from_millis(200)), "the stuck pipeline was reported stopped");
        // Stopping it again (as a drop guard would) neither waits nor claims success.
        assert!(!stop_within(&pipeline, STOP_GRACE));

        // Let the streaming thread go: the abandoned transition then completes.
        drop(release_tx);
        let mut reached_null = false;
        for _ in 0..600 {
            if pipeline.current_state() == gst::State::Null {
                reached_null = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(reached_null, "the abandoned pipeline never reached Null once released");
    }
}
