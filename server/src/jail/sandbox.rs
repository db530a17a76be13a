//! Confinement of a media child: resource limits set between fork and exec (parent
//! side), then Landlock and seccomp applied by the child to itself once GStreamer is
//! initialised.

use std::path::{Path, PathBuf};

use super::protocol::Request;

/// Limits applied to the child before it runs any code of its own.
#[derive(Debug, Clone, Copy)]
pub struct ChildLimits {
    pub address_space_bytes: u64,
    pub cpu_secs: u64,
    pub file_size_bytes: u64,
    pub nice: i32,
}

/// Runs in the forked child before `exec`: only async-signal-safe calls, no
/// allocation. New process group (so a kill reaches every thread and helper), the
/// rlimits, no core dumps, the nice value, and every inherited descriptor above
/// stderr marked close-on-exec.
#[allow(unsafe_code)]
pub fn apply_in_forked_child(limits: ChildLimits) -> std::io::Result<()> {
    // SAFETY: plain system calls on this process with values computed before fork.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        set_rlimit(libc::RLIMIT_AS, limits.address_space_bytes, limits.address_space_bytes)?;
        // SIGXCPU at the soft limit (a readable failure), SIGKILL a little later.
        set_rlimit(libc::RLIMIT_CPU, limits.cpu_secs, limits.cpu_secs.saturating_add(5))?;
        set_rlimit(libc::RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes)?;
        set_rlimit(libc::RLIMIT_CORE, 0, 0)?;
        if limits.nice > 0 {
            // Best effort: an unprivileged process may always lower its own priority.
            libc::setpriority(libc::PRIO_PROCESS, 0, limits.nice);
        }
        // close_range(3, ~0, CLOSE_RANGE_CLOEXEC): database sockets, log files, the
        // listening socket... none of them survives exec. Older kernels lack it; Rust
        // and the libraries here open descriptors close-on-exec anyway.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
    }
    Ok(())
}

#[allow(unsafe_code)]
unsafe fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: the caller is the forked child; setrlimit is async-signal-safe.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Which confinement the kernel granted.
pub struct Status {
    /// `full`, `partial`, `none` or `off`.
    pub landlock: String,
    pub seccomp: bool,
}

/// Confine this (child) process as the request asks.
pub fn confine(request: &Request) -> Status {
    let landlock = if request.sandbox.landlock {
        match landlock_rules(request) {
            Ok(status) => status.to_string(),
            Err(err) => {
                tracing::warn!(error = %err, "Landlock could not be applied");
                "none".to_string()
            }
        }
    } else {
        "off".to_string()
    };
    let seccomp = request.sandbox.seccomp
        && match seccomp_filter() {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "the seccomp filter could not be applied");
                false
            }
        };
    Status { landlock, seccomp }
}

/// Directories of the system a GStreamer process needs to read (libraries, plugins,
/// configuration, /proc and /sys for CPU features, /dev for null and urandom).
const SYSTEM_READ_DIRS: &[&str] = &["/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc", "/proc", "/sys", "/dev"];

fn landlock_rules(request: &Request) -> Result<&'static str, landlock::RulesetError> {
    use landlock::{
        Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
    };
    let abi = ABI::V5;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let file_only = AccessFs::from_file(abi);
    let mut rules: Vec<PathBeneath<PathFd>> = Vec::new();
    let mut add = |path: &Path, access: landlock::BitFlags<AccessFs>| {
        let Ok(fd) = PathFd::new(path) else { return };
        let access = if path.is_dir() { access } else { access & file_only };
        rules.push(PathBeneath::new(fd, access));
    };
    let mut read_dirs: Vec<PathBuf> = SYSTEM_READ_DIRS.iter().map(PathBuf::from).collect();
    read_dirs.extend(request.sandbox.read_dirs.iter().cloned());
    for dir in &read_dirs {
        add(dir, read);
    }
    add(Path::new("/dev/null"), AccessFs::from_file(abi));
    add(&request.source, read);
    for dir in request.sandbox.write_dirs.iter().chain(request.work_dir.iter()) {
        add(dir, all);
    }
    let ruleset = Ruleset::default()
        .handle_access(all)?
        .create()?
        .add_rules(rules.into_iter().map(Ok::<_, landlock::RulesetError>))?;
    let status = ruleset.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => "none",
    })
}

/// Refuse (EPERM) what no media work needs and an exploited decoder would want:
/// network sockets and connections, running programs, debugging other processes,
/// signalling anything but itself, kernel and namespace administration.
fn seccomp_filter() -> Result<(), String> {
    use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};
    use std::collections::BTreeMap;

    let arch = match std::env::consts::ARCH {
        "x86_64" => seccompiler::TargetArch::x86_64,
        "aarch64" => seccompiler::TargetArch::aarch64,
        other => return Err(format!("no seccomp filter for {other}")),
    };
    let err = |e: seccompiler::BackendError| e.to_string();
    let pid = u64::from(std::process::id());
    let arg0 = |op: SeccompCmpOp, value: u64| SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, value).map_err(err);

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for syscall in [
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_tkill,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_send_signal,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
    ] {
        rules.insert(syscall, Vec::new());
    }
    // Network and netlink sockets (local socket pairs stay allowed: GLib uses them).
    let mut socket_rules = Vec::new();
    for domain in [libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK, libc::AF_PACKET] {
        let domain = u64::try_from(domain).map_err(|e| e.to_string())?;
        socket_rules.push(SeccompRule::new(vec![arg0(SeccompCmpOp::Eq, domain)?]).map_err(err)?);
    }
    rules.insert(libc::SYS_socket, socket_rules);
    // Signals only to itself (abort() raises through tgkill on its own pid).
    rules.insert(
        libc::SYS_kill,
        vec![SeccompRule::new(vec![arg0(SeccompCmpOp::Ne, pid)?, arg0(SeccompCmpOp::Ne, 0)?]).map_err(err)?],
    );
    rules.insert(libc::SYS_tgkill, vec![SeccompRule::new(vec![arg0(SeccompCmpOp::Ne, pid)?]).map_err(err)?]);

    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch).map_err(err)?;
    let program: seccompiler::BpfProgram = filter.try_into().map_err(err)?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| e.to_string())
}
