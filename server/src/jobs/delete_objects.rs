//! A DELETE_OBJECTS job: remove every object under one video's (or user's) prefix.

use entities::{job, LogLevel};
use serde::Deserialize;
use std::sync::Arc;

use super::runner::{JobContext, JobError, JobReporter};
use super::runner_storage::storage_error;
use crate::storage::validate_prefix;

/// `{"prefix": "users/{user}/videos/{video}/"}`
#[derive(Debug, Deserialize)]
struct DeletePayload {
    prefix: String,
}

fn invalid(reason: String) -> JobError {
    JobError::Permanent { code: "INVALID_PAYLOAD", reason }
}

/// The prefix to delete, refused unless it is a user's subtree ending in `/`.
fn checked_prefix(payload: &serde_json::Value) -> Result<String, JobError> {
    let parsed: DeletePayload = serde_json::from_value(payload.clone())
        .map_err(|e| invalid(format!("the delete request is malformed: {e}")))?;
    let prefix = parsed.prefix;
    if !prefix.starts_with("users/") || !prefix.ends_with('/') || prefix.len() <= "users/".len() {
        return Err(invalid("the prefix must start with \"users/\" and end with \"/\"".into()));
    }
    validate_prefix(&prefix).map_err(|e| invalid(format!("the prefix is not a valid key: {e}")))?;
    Ok(prefix)
}

#[tracing::instrument(skip_all, fields(job_id = %job.id), err(Display))]
pub(crate) async fn run_delete_objects(
    ctx: &JobContext,
    job: &job::Model,
    reporter: Arc<dyn JobReporter>,
) -> Result<u64, JobError> {
    let prefix = checked_prefix(&job.payload)?;
    reporter.log(LogLevel::Info, format!("deleting objects under {prefix}"));
    let count = ctx.store.delete_prefix(&prefix).await.map_err(|e| storage_error("deleting objects failed", &e))?;
    reporter.log(LogLevel::Info, format!("deleted {count} object(s)"));
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_outside_a_user_subtree_are_refused() {
        for bad in ["", "users/", "users", "videos/x/", "users/a/b", "users/../x/", "/users/a/", "users//a/"] {
            let payload = serde_json::json!({ "prefix": bad });
            assert!(matches!(checked_prefix(&payload), Err(JobError::Permanent { .. })), "{bad}");
        }
        assert!(matches!(checked_prefix(&serde_json::json!({})), Err(JobError::Permanent { .. })));
        let ok = serde_json::json!({ "prefix": "users/u1/videos/v1/" });
        assert_eq!(checked_prefix(&ok).unwrap(), "users/u1/videos/v1/");
    }
}
