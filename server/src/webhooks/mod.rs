//! Webhooks: signed, retried HTTP deliveries of stored video events.
//!
//! **Fan-in (exactly one delivery per endpoint and event).** `repo::webhooks::fan_in`
//! runs inside `repo::outbox::record`, in the transaction that writes the outbox row: it
//! inserts one `webhook_deliveries` row per enabled endpoint that subscribes to the
//! event's kind and may see the video (the video owner's own endpoints, and global
//! endpoints). The delivery exists exactly when the event commits, whichever process
//! recorded it, and a unique index on (endpoint, event cursor) backs that up; there is
//! no cursor to keep or race for. PROGRESS is never stored, so never delivered.
//!
//! **Delivery.** Every `serve` process runs [`delivery::run`], which repeatedly calls
//! [`delivery::deliver_due`]: it claims due PENDING rows with a conditional UPDATE
//! (`next_attempt_at <= now` → `now + claim`), so two processes never attempt the same
//! delivery at once, and a process that dies mid-attempt leaves a row that becomes due
//! again when its claim runs out (deliveries are rows: they survive restarts). This is
//! a small loop of its own rather than a `JobKind` of the jobs table because its retry
//! policy (for a period, not a number of attempts), its per-endpoint failure counting
//! and its per-attempt log differ from the transcode queue's.
//!
//! **Wire format.** `POST` of JSON `{ id, type, createdAt, data: { videoId, status,
//! error, rendition, cursor, seq } }`, signed per [Standard Webhooks] (see
//! [`signing`]): `webhook-id` (the delivery id: the idempotency key, the same on
//! every retry, redelivery and replay), `webhook-timestamp` (unix seconds of this
//! attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`, so the official verifier libraries work unchanged.
//! Receivers reject timestamps more than 5 minutes from their clock (the replay
//! window) and dedupe on the id within it. Delivery is at-least-once. The previous
//! release's `Reelhouse-Webhook-*` headers are sent beside them while
//! `webhooks.legacy_headers` is on (this release's default; gone in the next).
//!
//! **Replay.** [`replay`] re-enqueues, for one endpoint, the deliveries of the
//! stored events after a cursor, as fan-in would have made them.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/
//!
//! **Secrets** are shown once, on creation, and stored sealed with a key derived from
//! the server's master secret (the server has to sign with them, so they cannot be
//! hashed); see [`secrets`].
//!
//! **SSRF.** Targets are http(s) URLs without credentials; unless
//! `webhooks.allow_private_targets`, a target resolving to a loopback, private,
//! link-local or otherwise internal address is refused at creation and again at every
//! attempt, after resolution, and the request is pinned to the addresses checked (no
//! second lookup a rebinding DNS server could answer differently). Redirects are not
//! followed.

pub mod delivery;
pub mod replay;
pub mod secrets;
pub mod signing;
pub mod target;

pub use signing::{new_secret, REPLAY_WINDOW_SECS};
