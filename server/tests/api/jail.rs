//! The media jail seen from outside: a transcode runs in a `reelhouse media` child
//! with a clean environment, its own process group, rlimits and a seccomp filter;
//! a cancel kills it, and a child killed from outside is a retryable attempt.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use reelhouse::jobs::runner::{self, JobError};
use reelhouse::media::cancel_flag;

use crate::helpers::eventually;
use crate::media::fixture;
use crate::runner::{harness, Collect};

/// Live `reelhouse media` children of this (test) process.
fn media_children() -> Vec<i32> {
    media_children_of(std::process::id())
}

/// `reelhouse media` children of `parent`, zombies included (a zombie is a child
/// nobody waited for: a leak too).
pub(crate) fn media_children_of(parent: u32) -> Vec<i32> {
    let me = parent as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid pgrp ...": split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) != Some(me) {
            continue;
        }
        // A zombie has no command line left: its name says it was a reelhouse.
        let comm = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map(|(c, _)| c).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let zombie = fields.first() == Some(&"Z") && comm == "reelhouse";
        if zombie || args.get(1) == Some(&&b"media"[..]) {
            found.push(pid);
        }
    }
    found
}

fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(2)?.parse().ok()
}

fn nice(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 19 of stat; 17th after the command name.
    stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Start a slow transcode; once it reports encoding progress, hand its media child
/// to `inspect`, which decides what happens to it. Returns the runner's result.
async fn with_running_child(
    inspect: impl FnOnce(i32, reelhouse::media::CancelFlag) + Send + 'static,
) -> (Result<runner::JobOutput, JobError>, i32) {
    let h = harness(|s| {
        s.media.speed_preset = "medium".into();
        s.jail.transcode_memory_mb = 3000;
    })
    .await;
    let video = h.video_from(&fixture("clip_720p.mp4")).await;
    let job = h.transcode_job(&video, serde_json::Value::Null).await;
    let reporter = Arc::new(Collect::default());
    let (tx, rx) = tokio::sync::oneshot::channel();
    *reporter.on_encoding.lock().unwrap() = Some(tx);
    let cancel = cancel_flag();
    let trigger = cancel.clone();
    let watcher = tokio::spawn(async move {
        rx.await.expect("the transcode reported encoding progress");
        let children = media_children();
        assert_eq!(children.len(), 1, "one media child while encoding: {children:?}");
        let pid = children[0];
        tokio::task::spawn_blocking(move || inspect(pid, trigger)).await.unwrap();
        pid
    });
    let result = runner::run(&h.ctx, &job, cancel, reporter).await;
    let pid = watcher.await.unwrap();
    assert!(h.scratch_is_empty(), "scratch left behind");
    (result, pid)
}

#[actix_web::test]
async fn a_transcode_runs_in_a_confined_child_and_cancel_kills_it() {
    let (result, pid) = with_running_child(|pid, cancel| {
        // No secret reaches the child: only a short list of harmless variables.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let keys: Vec<String> = environ
            .split(|b| *b == 0)
            .filter(|kv| !kv.is_empty())
            .map(|kv| String::from_utf8_lossy(kv).split('=').next().unwrap_or_default().to_string())
            .collect();
        let allowed = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "XDG_CACHE_HOME"];
        for key in &keys {
            assert!(allowed.contains(&key.as_str()) || key.starts_with("GST_"), "the child inherited {key}");
        }
        // Its own process group, so a kill reaches every thread and helper.
        assert_eq!(process_group(pid), Some(pid));
        // The whole child runs at the encoder nice value (10 by default) or lower priority.
        assert!(nice(pid).is_some_and(|n| n >= 10), "nice {:?}", nice(pid));
        // The configured address-space limit, and no core dumps.
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = |name: &str| limits.lines().find(|l| l.starts_with(name)).unwrap().to_string();
        assert!(line("Max address space").contains(&(3000u64 * 1024 * 1024).to_string()), "{limits}");
        assert!(line("Max core file size").split_whitespace().any(|w| w == "0"), "{limits}");
        assert!(!line("Max cpu time").contains("unlimited"), "{limits}");
        // A seccomp filter is installed (mode 2).
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.lines().any(|l| l.starts_with("Seccomp:") && l.trim_end().ends_with('2')), "{status}");
        // Nothing of the parent's leaked through: no network sockets among its descriptors.
        let tcp: String = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect();
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
            let target = std::fs::read_link(fd.path()).map(|t| t.display().to_string()).unwrap_or_default();
            if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                assert!(!tcp.contains(&format!(" {inode} ")), "the child holds a TCP socket: {target}");
            }
        }
        cancel.store(true, Ordering::SeqCst);
    })
    .await;
    assert!(matches!(result, Err(JobError::Cancelled)), "{result:?}");
    assert!(!alive(pid), "the media child outlived its cancelled job");
    assert!(media_children().is_empty());
}

#[actix_web::test]
async fn a_media_child_killed_mid_encode_is_a_retryable_attempt() {
    let (result, pid) = with_running_child(|pid, _cancel| {
        let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
        assert!(status.success());
    })
    .await;
    assert!(matches!(result, Err(JobError::Retryable(_))), "{result:?}");
    assert!(eventually(50, || async move { !alive(pid) }).await);
}
