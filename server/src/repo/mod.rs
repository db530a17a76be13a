//! sea-orm queries per aggregate, and the access rules that go with them.

pub mod videos;
