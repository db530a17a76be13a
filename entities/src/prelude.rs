//! Entity types under short names, as `use entities::prelude::*` expects.

pub use super::account_token::Entity as AccountToken;
pub use super::api_key::Entity as ApiKey;
pub use super::event_outbox::Entity as EventOutbox;
pub use super::job::Entity as Job;
pub use super::job_log::Entity as JobLog;
pub use super::moderation_action::Entity as ModerationAction;
pub use super::processing_usage::Entity as ProcessingUsage;
pub use super::refresh_token::Entity as RefreshToken;
pub use super::refresh_token_family::Entity as RefreshTokenFamily;
pub use super::rendition::Entity as Rendition;
pub use super::upload::Entity as Upload;
pub use super::user::Entity as User;
pub use super::video::Entity as Video;
pub use super::video_daily_stat::Entity as VideoDailyStat;
pub use super::video_view::Entity as VideoView;
pub use super::webhook_attempt::Entity as WebhookAttempt;
pub use super::webhook_delivery::Entity as WebhookDelivery;
pub use super::webhook_endpoint::Entity as WebhookEndpoint;
pub use super::worker::Entity as Worker;
