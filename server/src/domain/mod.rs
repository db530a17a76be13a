//! Plain domain data shared by every layer, with no I/O: the event model
//! ([`event`]) and the webhook payload built from it ([`webhook`]). `repo` stores
//! them, the services act on them, the transport renders them.

pub mod event;
pub mod webhook;
