//! Keeping the process's memory from creeping up under encoding load (glibc only).
//!
//! Every transcode runs GStreamer and x264 on fresh threads, and glibc gives busy
//! threads their own malloc arenas (up to 8 per core). Frames freed in one arena are
//! kept there for reuse, so resident memory rose with the number of encodes run and
//! never came back: a 10-minute soak (docs/BENCHMARKS.md) went from 36 MiB to
//! 607 MiB, of which `malloc_trim` could return 390 MiB, so it was free memory, not
//! a leak. Two arenas kept the same soak flat at 320 MiB, and a trim after each job
//! brings it back to about 115 MiB.
//!
//! These are the only two calls into libc in the crate; both are thread-safe glibc
//! entry points that take no pointers.

/// Arenas when `MALLOC_ARENA_MAX` is not set in the environment.
pub const DEFAULT_ARENA_MAX: i32 = 2;

/// Cap glibc's malloc arenas at [`DEFAULT_ARENA_MAX`], unless the operator chose a
/// number with `MALLOC_ARENA_MAX` (glibc reads that itself). Call first in `main`,
/// before any thread is started.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt takes two integers and only changes allocator tuning; glibc
    // documents M_ARENA_MAX as settable at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, DEFAULT_ARENA_MAX);
    }
}

/// Give the allocator's free pages back to the operating system. Takes a few
/// milliseconds: call it off the async threads, after a job, not per request.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes an integer (the padding to keep) and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
