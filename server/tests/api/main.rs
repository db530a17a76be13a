//! Integration tests: one binary, real services (see scripts/test.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod storage;
