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
//! Request bodies of a megabyte or more (a GraphQL document, a tus chunk) did the
//! same to the API process: glibc's mmap threshold is dynamic, so every freed
//! mmapped block raises it (up to 32 MiB), and from then on buffers of that size
//! come from the arenas, are freed into them and stay resident. 10,000 fuzzed
//! GraphQL documents took the server from 109 to 648 MiB, and `malloc_trim` brought
//! it back to 102 MiB: free memory again, not a leak. A fixed threshold
//! ([`fix_mmap_threshold`], serve and worker processes) keeps such blocks mmapped
//! and returned on free: the same run grows by 14 MiB (docs/BENCHMARKS.md).
//!
//! These are the only calls into libc in the crate; all are thread-safe glibc
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

/// Blocks this big or bigger are mmapped (and unmapped when freed) when
/// `MALLOC_MMAP_THRESHOLD_` is not set. glibc starts at 128 KiB and raises it as
/// big blocks are freed; 1 MiB fixed (which also stops the raising) kept the fuzz
/// run flat, as did 128 KiB, with fewer mmap calls for mid-sized buffers.
pub const DEFAULT_MMAP_THRESHOLD: i32 = 1024 * 1024;

/// Fix glibc's mmap threshold at [`DEFAULT_MMAP_THRESHOLD`] unless the operator chose
/// one (`MALLOC_MMAP_THRESHOLD_`, or `glibc.malloc.mmap_threshold` in
/// `GLIBC_TUNABLES`), so freed big buffers go back to the system instead of
/// staying in the arenas. Call in `main` before any thread is started; the media
/// child does not (its frame buffers are pooled and reused).
pub fn fix_mmap_threshold() {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() || tunables.contains("mmap_threshold") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt takes two integers and only changes allocator tuning; glibc
    // documents M_MMAP_THRESHOLD as settable at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD);
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
