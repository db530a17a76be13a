//! The clip every upload sends: `--clip PATH`, or a small one made with GStreamer.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Make a `seconds`-long `width`x`height` H.264 MP4 (no audio) at `out` with gst-launch-1.0.
pub fn generate(out: &Path, width: u32, height: u32, seconds: u32) -> anyhow::Result<()> {
    let frames = seconds * 25;
    let pipeline = format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,format=I420,width={width},height={height},framerate=25/1 \
         ! x264enc speed-preset=ultrafast key-int-max=25 bframes=0 ! h264parse ! mp4mux faststart=true ! filesink location={}",
        out.display()
    );
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .stdout(std::process::Stdio::null())
        .status()
        .context("running gst-launch-1.0 (install GStreamer or pass --clip)")?;
    if !status.success() {
        bail!("gst-launch-1.0 failed ({status}) making {}", out.display());
    }
    Ok(())
}

/// The clip's bytes: the given file, or a generated 3 s 320x240 one kept in the temp dir.
pub fn load_or_generate(clip: Option<&Path>) -> anyhow::Result<(PathBuf, Vec<u8>)> {
    let path = match clip {
        Some(path) => path.to_path_buf(),
        None => {
            let path = std::env::temp_dir().join(format!("reelhouse-load-{}.mp4", std::process::id()));
            generate(&path, 320, 240, 3)?;
            path
        }
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading the clip {}", path.display()))?;
    if clip.is_none() {
        let _ = std::fs::remove_file(&path);
    }
    Ok((path, bytes))
}
