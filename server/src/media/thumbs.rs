//! Poster, thumbnails and storyboard: frames grabbed by seeking an appsink pipeline,
//! composed in Rust and encoded to JPEG with GStreamer's jpegenc.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::pipeline::{clock_time, limit_decoder_errors, make, run_to_eos, stop, wait_async_done, Limits, NullOnDrop};
use super::pipeline::{connect_decoder, upright_at_size, SCALE_METHOD};
use super::{ensure_gstreamer, file_uri, MediaError, MediaInfo};

/// A decoded RGB picture (3 bytes per pixel, rows packed).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    /// Where in the source it was taken.
    pub position: Duration,
}

impl Frame {
    /// Mean luma (BT.601, 0..=255).
    pub fn mean_luma(&self) -> f64 {
        let pixels = self.rgb.len() / 3;
        if pixels == 0 {
            return 0.0;
        }
        let sum: f64 = self
            .rgb
            .chunks_exact(3)
            .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
            .sum();
        sum / pixels as f64
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ThumbnailOptions {
    /// Width of poster and thumbnails (never upscaled).
    pub width: u32,
    /// Frames with a mean luma below this are "black" and skipped for the poster.
    pub black_luma: f64,
    /// Where the poster is looked for, in order, as fractions of the duration.
    pub poster_candidates: Vec<f64>,
    /// Fixed fractions for the extra thumbnails.
    pub thumbnail_fractions: Vec<f64>,
    pub jpeg_quality: i32,
    pub timeout: Duration,
}

impl Default for ThumbnailOptions {
    fn default() -> Self {
        Self {
            width: 640,
            black_luma: 20.0,
            poster_candidates: vec![0.1, 0.2, 0.3, 0.5, 0.05, 0.7],
            thumbnail_fractions: vec![0.25, 0.5, 0.75],
            jpeg_quality: 85,
            timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Poster {
    pub path: PathBuf,
    pub position: Duration,
    pub mean_luma: f64,
    pub width: u32,
    pub height: u32,
}

/// Write the poster (`poster.jpg`) and thumbnails (`thumb-{n}.jpg`) into `out_dir`.
/// The poster is the first candidate frame that is not black (else the brightest).
#[tracing::instrument(skip_all, fields(source = %source.display()), err(Display))]
pub fn poster_and_thumbnails(
    source: &Path,
    info: &MediaInfo,
    out_dir: &Path,
    opts: &ThumbnailOptions,
    cancel: &AtomicBool,
) -> Result<(Poster, Vec<PathBuf>), MediaError> {
    let started = Instant::now();
    let limits = Limits { cancel, deadline: started + opts.timeout, timeout: opts.timeout };
    let duration = usable_duration(info)?;
    let mut grabber = FrameGrabber::open(source, info, opts.width, &limits)?;
    let mut written = Written::new();
    std::fs::create_dir_all(out_dir).map_err(|e| MediaError::io(format!("creating {}", out_dir.display()), e))?;

    let mut best: Option<Frame> = None;
    for fraction in &opts.poster_candidates {
        let frame = grabber.grab(duration.mul_f64(fraction.clamp(0.0, 1.0)), &limits)?;
        let luma = frame.mean_luma();
        let brighter = best.as_ref().is_none_or(|b| luma > b.mean_luma());
        if brighter {
            best = Some(frame);
        }
        if luma >= opts.black_luma {
            break;
        }
    }
    let frame = best.ok_or_else(|| MediaError::Unreadable { reason: "no frame could be decoded".into() })?;
    let poster_path = out_dir.join("poster.jpg");
    encode_jpeg(&frame, &poster_path, opts.jpeg_quality, &limits, &mut written)?;
    let poster = Poster {
        path: poster_path,
        position: frame.position,
        mean_luma: frame.mean_luma(),
        width: frame.width,
        height: frame.height,
    };

    let mut thumbs = Vec::new();
    for (n, fraction) in opts.thumbnail_fractions.iter().enumerate() {
        let frame = grabber.grab(duration.mul_f64(fraction.clamp(0.0, 1.0)), &limits)?;
        let path = out_dir.join(format!("thumb-{n}.jpg"));
        encode_jpeg(&frame, &path, opts.jpeg_quality, &limits, &mut written)?;
        thumbs.push(path);
    }
    grabber.close();
    written.keep();
    Ok((poster, thumbs))
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoryboardOptions {
    pub tile_width: u32,
    pub columns: u32,
    pub max_tiles: u32,
    /// Shortest time between two tiles.
    pub min_interval: Duration,
    pub jpeg_quality: i32,
    pub timeout: Duration,
}

impl Default for StoryboardOptions {
    fn default() -> Self {
        Self {
            tile_width: 160,
            columns: 10,
            max_tiles: 100,
            min_interval: Duration::from_secs(1),
            jpeg_quality: 75,
            timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Storyboard {
    /// `storyboard.jpg`
    pub sprite: PathBuf,
    /// `storyboard.vtt`, cues pointing into the sprite with `#xywh=` fragments.
    pub vtt: PathBuf,
    pub tiles: u32,
    pub columns: u32,
    pub rows: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    pub interval: Duration,
}

/// Write a storyboard sprite sheet and its WebVTT index into `out_dir`.
#[tracing::instrument(skip_all, fields(source = %source.display()), err(Display))]
pub fn storyboard(
    source: &Path,
    info: &MediaInfo,
    out_dir: &Path,
    opts: &StoryboardOptions,
    cancel: &AtomicBool,
) -> Result<Storyboard, MediaError> {
    let started = Instant::now();
    let limits = Limits { cancel, deadline: started + opts.timeout, timeout: opts.timeout };
    let duration = usable_duration(info)?;
    let max_tiles = opts.max_tiles.max(1);
    let min_interval = opts.min_interval.max(Duration::from_millis(100));
    let by_interval = (duration.as_secs_f64() / min_interval.as_secs_f64()).ceil().max(1.0) as u32;
    let tiles = by_interval.min(max_tiles);
    let interval = duration / tiles;
    let columns = opts.columns.clamp(1, tiles);
    let rows = tiles.div_ceil(columns);

    let mut grabber = FrameGrabber::open(source, info, opts.tile_width, &limits)?;
    let (tile_width, tile_height) = (grabber.width, grabber.height);
    let mut sheet = Frame {
        width: tile_width * columns,
        height: tile_height * rows,
        rgb: vec![0; (tile_width * columns * tile_height * rows * 3) as usize],
        position: Duration::ZERO,
    };
    for index in 0..tiles {
        let frame = grabber.grab(interval * index, &limits)?;
        let (x, y) = ((index % columns) * tile_width, (index / columns) * tile_height);
        blit(&frame, &mut sheet, x, y);
    }
    grabber.close();

    std::fs::create_dir_all(out_dir).map_err(|e| MediaError::io(format!("creating {}", out_dir.display()), e))?;
    let mut written = Written::new();
    let sprite = out_dir.join("storyboard.jpg");
    encode_jpeg(&sheet, &sprite, opts.jpeg_quality, &limits, &mut written)?;
    let sprite_name = "storyboard.jpg";
    let mut vtt = String::from("WEBVTT\n");
    for index in 0..tiles {
        let start = interval * index;
        let end = if index + 1 == tiles { duration } else { interval * (index + 1) };
        let (x, y) = ((index % columns) * tile_width, (index / columns) * tile_height);
        vtt.push_str(&format!(
            "\n{} --> {}\n{sprite_name}#xywh={x},{y},{tile_width},{tile_height}\n",
            vtt_time(start),
            vtt_time(end)
        ));
    }
    let vtt_path = out_dir.join("storyboard.vtt");
    written.paths.push(vtt_path.clone());
    std::fs::write(&vtt_path, vtt).map_err(|e| MediaError::io(format!("writing {}", vtt_path.display()), e))?;
    written.keep();
    Ok(Storyboard { sprite, vtt: vtt_path, tiles, columns, rows, tile_width, tile_height, interval })
}

/// Decode a JPEG (or any single image) file into RGB.
pub fn load_jpeg(path: &Path) -> Result<Frame, MediaError> {
    ensure_gstreamer()?;
    let timeout = Duration::from_secs(30);
    let never = AtomicBool::new(false);
    let limits = Limits { cancel: &never, deadline: Instant::now() + timeout, timeout };
    let pipeline = super::pipeline::new_pipeline("load-jpeg");
    let _null = NullOnDrop(pipeline.clone());
    let src = make("filesrc", None)?;
    src.set_property("location", path.to_string_lossy().to_string());
    let dec = make("jpegdec", None)?;
    let convert = make("videoconvert", None)?;
    let caps = gst::Caps::builder("video/x-raw").field("format", "RGB").build();
    let sink = gst_app::AppSink::builder().caps(&caps).sync(false).build();
    pipeline.add_many([&src, &dec, &convert, sink.upcast_ref()])?;
    gst::Element::link_many([&src, &dec, &convert, sink.upcast_ref()])?;
    preroll(&pipeline, &limits)?;
    let frame = pull_frame(&sink, Duration::ZERO)?;
    stop(&pipeline);
    Ok(frame)
}

fn usable_duration(info: &MediaInfo) -> Result<Duration, MediaError> {
    if info.video_tracks == 0 {
        return Err(MediaError::Rejected { reason: "the file has no video stream".into() });
    }
    info.duration
        .filter(|d| !d.is_zero())
        .ok_or_else(|| MediaError::Rejected { reason: "the duration is unknown or zero".into() })
}

/// Files written so far; removed on drop unless kept.
struct Written {
    paths: Vec<PathBuf>,
    keep: bool,
}

impl Written {
    fn new() -> Self {
        Self { paths: Vec::new(), keep: false }
    }
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        if !self.keep {
            for path in &self.paths {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A paused decode pipeline ending in an appsink; frames are taken by accurate seeks.
struct FrameGrabber {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    width: u32,
    height: u32,
    last: gst::ClockTime,
    _null: NullOnDrop,
}

impl FrameGrabber {
    fn open(source: &Path, info: &MediaInfo, width: u32, limits: &Limits<'_>) -> Result<Self, MediaError> {
        ensure_gstreamer()?;
        let (dw, dh) = info.display_size();
        let (dw, dh) = (dw.max(2), dh.max(2));
        let out_w = (width.min(dw) / 2 * 2).max(2);
        let out_h = ((f64::from(dh) * f64::from(out_w) / f64::from(dw)).round() as u32 / 2 * 2).max(2);

        let pipeline = super::pipeline::new_pipeline("frame-grabber");
        let null = NullOnDrop(pipeline.clone());
        let decode = make("uridecodebin", Some("decode"))?;
        decode.set_property("uri", file_uri(source)?);
        limit_decoder_errors(&decode, 10);
        let [convert, flip, scale, convert_out, size] = upright_at_size("RGB", out_w, out_h, SCALE_METHOD)?;
        let sink = gst_app::AppSink::builder().sync(false).max_buffers(1).build();
        pipeline.add_many([&decode, &convert, &flip, &scale, &convert_out, &size, sink.upcast_ref()])?;
        gst::Element::link_many([&convert, &flip, &scale, &convert_out, &size, sink.upcast_ref()])?;
        connect_decoder(&pipeline, &decode, &convert, None);
        preroll(&pipeline, limits)?;
        Ok(Self { pipeline, sink, width: out_w, height: out_h, last: gst::ClockTime::ZERO, _null: null })
    }

    fn grab(&mut self, position: Duration, limits: &Limits<'_>) -> Result<Frame, MediaError> {
        limits.check()?;
        let target = clock_time(position);
        // The first preroll already holds frame 0.
        if target != self.last || target != gst::ClockTime::ZERO {
            self.pipeline.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, target).map_err(|e| {
                MediaError::Pipeline {
                    element: self.pipeline.name().to_string(),
                    reason: format!("seeking to {:.2} s failed: {e}", position.as_secs_f64()),
                    debug: None,
                }
            })?;
            wait_async_done(&self.pipeline, limits)?;
        }
        self.last = target;
        let frame = pull_frame(&self.sink, position)?;
        if frame.width != self.width || frame.height != self.height {
            return Err(MediaError::Build(format!(
                "expected {}x{} frames, got {}x{}",
                self.width, self.height, frame.width, frame.height
            )));
        }
        Ok(frame)
    }

    fn close(self) {
        stop(&self.pipeline);
    }
}

fn preroll(pipeline: &gst::Pipeline, limits: &Limits<'_>) -> Result<(), MediaError> {
    if pipeline.set_state(gst::State::Paused).is_err() {
        // The bus carries the reason.
        wait_async_done(pipeline, limits)?;
        return Err(MediaError::Pipeline {
            element: pipeline.name().to_string(),
            reason: "the pipeline could not pause".into(),
            debug: None,
        });
    }
    wait_async_done(pipeline, limits)
}

fn pull_frame(sink: &gst_app::AppSink, position: Duration) -> Result<Frame, MediaError> {
    let sample = sink.try_pull_preroll(gst::ClockTime::from_seconds(5)).ok_or_else(|| MediaError::Pipeline {
        element: sink.name().to_string(),
        reason: "no frame was decoded".into(),
        debug: None,
    })?;
    let caps = sample.caps().ok_or_else(|| MediaError::Build("a frame without caps".into()))?;
    let video = gstreamer_video::VideoInfo::from_caps(caps).map_err(|e| MediaError::Build(e.to_string()))?;
    let buffer = sample.buffer().ok_or_else(|| MediaError::Build("a sample without a buffer".into()))?;
    let map = buffer.map_readable().map_err(|e| MediaError::Build(e.to_string()))?;
    let (width, height) = (video.width(), video.height());
    let stride = usize::try_from(video.stride()[0]).unwrap_or(0);
    let row = width as usize * 3;
    let mut rgb = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        let start = y * stride;
        let line =
            map.get(start..start + row).ok_or_else(|| MediaError::Build("a frame smaller than its caps".into()))?;
        rgb.extend_from_slice(line);
    }
    Ok(Frame { width, height, rgb, position })
}

fn blit(tile: &Frame, sheet: &mut Frame, x: u32, y: u32) {
    let row = tile.width as usize * 3;
    for ty in 0..tile.height as usize {
        let dst_y = y as usize + ty;
        if dst_y >= sheet.height as usize {
            break;
        }
        let dst = (dst_y * sheet.width as usize + x as usize) * 3;
        let src = ty * row;
        let len = row.min((sheet.width as usize - x as usize) * 3);
        if let (Some(d), Some(s)) = (sheet.rgb.get_mut(dst..dst + len), tile.rgb.get(src..src + len)) {
            d.copy_from_slice(s);
        }
    }
}

/// Encode an RGB frame to a JPEG file with jpegenc.
fn encode_jpeg(
    frame: &Frame,
    path: &Path,
    quality: i32,
    limits: &Limits<'_>,
    written: &mut Written,
) -> Result<(), MediaError> {
    let pipeline = super::pipeline::new_pipeline("jpeg-encoder");
    let _null = NullOnDrop(pipeline.clone());
    let info = gstreamer_video::VideoInfo::builder(gstreamer_video::VideoFormat::Rgb, frame.width, frame.height)
        .fps(gst::Fraction::new(0, 1))
        .build()
        .map_err(|e| MediaError::Build(e.to_string()))?;
    let caps = info.to_caps().map_err(|e| MediaError::Build(e.to_string()))?;
    let src = gst_app::AppSrc::builder().caps(&caps).format(gst::Format::Time).build();
    let convert = make("videoconvert", None)?;
    let enc = make("jpegenc", None)?;
    enc.set_property("quality", quality.clamp(1, 100));
    let sink = make("filesink", None)?;
    sink.set_property("location", path.to_string_lossy().to_string());
    pipeline.add_many([src.upcast_ref(), &convert, &enc, &sink])?;
    gst::Element::link_many([src.upcast_ref(), &convert, &enc, &sink])?;
    written.paths.push(path.to_path_buf());

    // Pad rows to the stride GStreamer expects for RGB (multiple of 4).
    let stride = usize::try_from(info.stride()[0]).unwrap_or(0);
    let row = frame.width as usize * 3;
    let mut data = vec![0u8; info.size()];
    for y in 0..frame.height as usize {
        if let (Some(d), Some(s)) = (data.get_mut(y * stride..y * stride + row), frame.rgb.get(y * row..(y + 1) * row))
        {
            d.copy_from_slice(s);
        }
    }
    let mut buffer = gst::Buffer::from_mut_slice(data);
    if let Some(b) = buffer.get_mut() {
        b.set_pts(gst::ClockTime::ZERO);
    }
    src.push_buffer(buffer).map_err(|e| MediaError::Build(format!("queueing a picture: {e:?}")))?;
    src.end_of_stream().map_err(|e| MediaError::Build(format!("ending a picture: {e:?}")))?;
    run_to_eos(&pipeline, limits, Duration::from_secs(1), &mut || Ok(()))
}

fn vtt_time(d: Duration) -> String {
    let ms = d.as_millis();
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000)
}
