//! S3's object rules, enforced by both storage backends so they behave alike, and
//! by settings validation.

/// S3's multipart rules, enforced by both backends so they behave alike.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
pub const MAX_PART_NUMBER: i32 = 10_000;
/// The largest object a single (non-multipart) PUT may carry, as on S3.
pub const MAX_SINGLE_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
