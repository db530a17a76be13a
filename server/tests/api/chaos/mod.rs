//! The fault matrix (issue 22, item 4): a deployment of several processes on one
//! machine — `reelhouse serve` replicas and `reelhouse worker` processes on one
//! PostgreSQL (behind a TCP proxy the test cuts), a Redis of the test's own (killed
//! and started again) and the test S3 — with a workload running through one fault
//! per test: users uploading over tus (resuming on any replica), following
//! `videoEvents` by cursor (reconnecting to any replica) and receiving webhooks.
//! Afterwards the invariants are asserted (every accepted upload completed or
//! resumable, every job SUCCEEDED or typed FAILED, none stuck, exactly one READY per
//! video, every feed without gap or duplicate, every webhook delivery received under
//! its id) and one row of the table — fault, workload, accepted, lost, duplicated,
//! recovery time — is printed and appended to `$REELHOUSE_CHAOS_REPORT`.
//!
//! The tests run only with `REELHOUSE_CHAOS=short|full` on the postgres backend
//! (`scripts/test-chaos.sh`: a `make test` stage with `short`, `make chaos` with
//! `full`); otherwise each says it is skipped.

pub(crate) mod cluster;
mod faults;
pub(crate) mod workload;
