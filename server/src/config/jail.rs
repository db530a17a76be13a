//! `[jail]`: the child processes that probe and transcode uploaded media.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JailSettings {
    /// The `reelhouse` binary that runs `reelhouse media` children; unset = this
    /// process's own executable.
    pub binary: Option<PathBuf>,
    /// Address-space limit (`RLIMIT_AS`) of a probing child, MiB.
    pub probe_memory_mb: u64,
    /// Address-space limit (`RLIMIT_AS`) of a transcoding child, MiB.
    pub transcode_memory_mb: u64,
    /// CPU-time limit (`RLIMIT_CPU`) of a probing child, seconds.
    pub probe_cpu_secs: u64,
    /// CPU-time limit (`RLIMIT_CPU`) of a transcoding child, seconds (all threads).
    pub transcode_cpu_secs: u64,
    /// Largest file a child may write (`RLIMIT_FSIZE`), MiB.
    pub max_file_mb: u64,
    /// Probe children running at once per process (each may take
    /// `probe_memory_mb`); further completions wait up to the probe timeout.
    /// Unset: twice the CPU cores.
    pub max_concurrent_probes: Option<usize>,
    /// Confine the child's file system access with Landlock where the kernel has it.
    pub landlock: bool,
    /// Refuse network, exec, ptrace and similar system calls with a seccomp filter.
    pub seccomp: bool,
}

impl Default for JailSettings {
    fn default() -> Self {
        Self {
            binary: None,
            probe_memory_mb: 1536,
            transcode_memory_mb: 4096,
            probe_cpu_secs: 60,
            transcode_cpu_secs: 6 * 3600,
            max_file_mb: 16 * 1024,
            max_concurrent_probes: None,
            landlock: true,
            seccomp: true,
        }
    }
}

impl JailSettings {
    pub fn probe_memory_bytes(&self) -> u64 {
        self.probe_memory_mb.saturating_mul(1024 * 1024)
    }

    pub fn transcode_memory_bytes(&self) -> u64 {
        self.transcode_memory_mb.saturating_mul(1024 * 1024)
    }

    pub fn probe_cpu(&self) -> Duration {
        Duration::from_secs(self.probe_cpu_secs)
    }

    pub fn transcode_cpu(&self) -> Duration {
        Duration::from_secs(self.transcode_cpu_secs)
    }

    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_mb.saturating_mul(1024 * 1024)
    }
}
