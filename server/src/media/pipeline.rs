//! The one loop that drives a pipeline's bus: errors, EOS, cancel, timeout, ticks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::MediaError;

/// Progress of a running encode, reported at most every `progress_interval`.
#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
pub struct RungProgress {
    pub name: String,
    pub percent: f64,
}

/// Puts the pipeline into `Null` whatever way the owner leaves.
pub(crate) struct NullOnDrop(pub gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
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

/// Play `pipeline` to EOS. `on_tick` runs every `tick` with the pipeline playing.
/// On error, cancel or timeout the pipeline is set to `Null` before returning.
pub(crate) fn run_to_eos(
    pipeline: &gst::Pipeline,
    limits: &Limits<'_>,
    tick: Duration,
    on_tick: &mut dyn FnMut() -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    let result = drive(pipeline, limits, tick, on_tick);
    let _ = pipeline.set_state(gst::State::Null);
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
                    tracing::warn!(element = ?w.src().map(|s| s.name()), warning = %w.error(), "pipeline warning")
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
