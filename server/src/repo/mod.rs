//! sea-orm queries per aggregate, and the access rules that go with them.

pub mod audit;
pub mod moderation;
pub mod usage;
pub mod users;
pub mod video_cache;
pub mod videos;
pub mod views;
