//! The reelhouse load harness: scenarios that drive a running server through its public
//! API only (GraphQL over HTTP, graphql-ws subscriptions, presigned and tus uploads) and
//! a report of what they measured. `reelhouse-baseline` (src/bin) is the bare actix
//! server the benchmarks compare against.

pub mod api;
pub mod backoff;
pub mod clip;
pub mod fuzz;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod ws;
