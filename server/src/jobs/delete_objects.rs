//! A DELETE_OBJECTS job: remove every object under one video's (or user's) prefix,
//! or under a few prefixes (the retired outputs of an earlier transcode).

use entities::{job, LogLevel};
use serde::Deserialize;
use std::sync::Arc;

use super::runner::{JobContext, JobError, JobReporter};
use super::runner_storage::storage_error;
use crate::storage::validate_prefix;

/// `{"prefix": "users/{user}/videos/{video}/"}` or `{"prefixes": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeletePayload {
    prefix: Option<String>,
    prefixes: Option<Vec<String>>,
}

/// Most prefixes one job deletes.
const MAX_PREFIXES: usize = 16;

fn invalid(reason: String) -> JobError {
    JobError::Permanent { code: crate::jobs::FailureCode::InvalidPayload, reason }
}

/// The prefixes to delete, each refused unless it is a user's subtree ending in `/`.
fn checked_prefixes(payload: &serde_json::Value) -> Result<Vec<String>, JobError> {
    let parsed: DeletePayload = serde_json::from_value(payload.clone())
        .map_err(|e| invalid(format!("the delete request is malformed: {e}")))?;
    let prefixes: Vec<String> = parsed.prefix.into_iter().chain(parsed.prefixes.unwrap_or_default()).collect();
    if prefixes.is_empty() || prefixes.len() > MAX_PREFIXES {
        return Err(invalid(format!("the delete request names 1 to {MAX_PREFIXES} prefixes")));
    }
    prefixes.into_iter().map(checked_prefix).collect()
}

fn checked_prefix(prefix: String) -> Result<String, JobError> {
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
    let mut count = 0;
    for prefix in checked_prefixes(&job.payload)? {
        reporter.log(LogLevel::Info, format!("deleting objects under {prefix}"));
        count += ctx.store.delete_prefix(&prefix).await.map_err(|e| storage_error("deleting objects failed", &e))?;
    }
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
            assert!(matches!(checked_prefixes(&payload), Err(JobError::Permanent { .. })), "{bad}");
            let payload = serde_json::json!({ "prefixes": ["users/u1/videos/v1/", bad] });
            assert!(matches!(checked_prefixes(&payload), Err(JobError::Permanent { .. })), "{bad}");
        }
        assert!(matches!(checked_prefixes(&serde_json::json!({})), Err(JobError::Permanent { .. })));
        let too_many = serde_json::json!({ "prefixes": vec!["users/u1/"; MAX_PREFIXES + 1] });
        assert!(matches!(checked_prefixes(&too_many), Err(JobError::Permanent { .. })));
        let ok = serde_json::json!({ "prefix": "users/u1/videos/v1/" });
        assert_eq!(checked_prefixes(&ok).unwrap(), vec!["users/u1/videos/v1/"]);
        let several = serde_json::json!({ "prefixes": ["users/u1/videos/v1/hls/", "users/u1/videos/v1/mp4/"] });
        assert_eq!(checked_prefixes(&several).unwrap().len(), 2);
    }
}
