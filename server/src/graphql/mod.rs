//! The GraphQL schema: built once, one `MergedObject` per domain.

pub mod account_mail;
pub mod accounts;
pub mod audit;
pub mod batches;
pub mod error_codes;
pub mod events;
pub mod job_log;
pub mod jobs;
pub mod limits;
pub mod loaders;
pub mod moderation;
mod paging;
pub mod persisted_queries;
pub mod progress;
mod server_info;
pub mod shared_frames;
pub mod system;
pub mod totp;
mod uploads;
pub mod user_admin;
pub mod videos;
pub mod views;
pub mod webhooks;
pub mod worker_tokens;

use async_graphql::{MergedObject, MergedSubscription, Schema};

use crate::config::GraphqlSettings;
use crate::state::AppState;

pub use accounts::{AccountsMutation, AccountsQuery};
pub use jobs::{JobsMutation, JobsQuery};
pub use server_info::{HeartbeatSubscription, ServerInfo, ServerMode, ServerQuery};
pub use videos::{VideosMutation, VideosQuery};
pub use webhooks::{WebhooksMutation, WebhooksQuery};

#[derive(MergedObject, Default)]
pub struct Query(
    ServerQuery,
    AccountsQuery,
    VideosQuery,
    views::ViewsQuery,
    JobsQuery,
    WebhooksQuery,
    audit::AuditQuery,
    user_admin::UserAdminQuery,
    system::SystemQuery,
    worker_tokens::WorkerTokensQuery,
    batches::BatchesQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    AccountsMutation,
    VideosMutation,
    views::ViewsMutation,
    moderation::ModerationMutation,
    uploads::UploadsMutation,
    JobsMutation,
    WebhooksMutation,
    account_mail::AccountMailMutation,
    totp::TotpMutation,
    user_admin::UserAdminMutation,
    worker_tokens::WorkerTokensMutation,
    batches::BatchesMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(
    HeartbeatSubscription,
    events::EventsSubscription,
    job_log::JobLogSubscription,
    batches::BatchesSubscription,
);

pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// Build the schema with its limits. `state` is `None` only for SDL export.
pub fn build_schema(settings: &GraphqlSettings, state: Option<AppState>) -> AppSchema {
    let mut builder = Schema::build(Query::default(), Mutation::default(), Subscription::default())
        .limit_complexity(settings.max_complexity)
        .limit_recursive_depth(settings.max_depth.max(32))
        .extension(error_codes::ErrorCodes)
        .extension(persisted_queries::PersistedQueries::new(settings.persisted_queries_capacity))
        .extension(limits::DocumentLimits {
            max_aliases: settings.max_aliases,
            max_directives: settings.max_directives,
            max_depth: settings.max_depth,
        })
        .extension(limits::QueryCost);
    if !settings.introspection_enabled() {
        builder = builder.disable_introspection().disable_suggestions();
    }
    // Spans for parse, validation, execution and every resolver: only when they are
    // exported (they cost a span per field on the hot path).
    if crate::telemetry::traces_exported() {
        builder = builder.extension(async_graphql::extensions::Tracing);
    }
    if let Some(state) = state {
        crate::auth::accounts::warm_up();
        builder = builder
            .data(loaders::video_loader(state.db.clone(), state.access_signals.videos().clone()))
            .data(system::LastStatus::default())
            .data(state);
    }
    builder.finish()
}

/// The SDL of the public schema, exactly as `reelhouse export-schema` prints it.
pub fn sdl() -> String {
    build_schema(&GraphqlSettings::default(), None).sdl()
}
