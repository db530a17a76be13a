//! SEND_MAIL jobs: open the sealed mail (`mail::enqueue` queued it) and deliver it.

use std::time::Duration;

use entities::job;

use super::runner::{JobContext, JobError, JobOutput};
use crate::mail::{template_label, Delivered, MailError, MailPayload};
use crate::media::CancelFlag;

/// How often a send in progress looks at its job's cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Resolves once `cancel` is set (a shutdown past its drain timeout, or a cancel).
async fn cancelled(cancel: &CancelFlag) {
    while !cancel.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

/// Run one SEND_MAIL job: open the sealed mail and deliver it.
///
/// The send stops when `cancel` is set: a shutdown lets a send in progress finish
/// within its drain timeout, then cancels it, and the job goes back to the queue
/// (the SMTP connection is dropped here, on the runtime, not left to a destructor
/// after the runtime ends). A mail cut off after the server took its DATA may
/// arrive twice: delivery is at least once.
#[tracing::instrument(skip_all, fields(job_id = %job.id))]
pub async fn run(ctx: &JobContext, job: &job::Model, cancel: &CancelFlag) -> Result<JobOutput, JobError> {
    let permanent = |reason: String| JobError::Permanent { code: crate::jobs::FailureCode::MailFailed, reason };
    let payload: MailPayload = serde_json::from_value(job.payload.clone())
        .map_err(|_| permanent("the mail job's payload is malformed".into()))?;
    let mail = ctx.mailer.open_mail(payload.mail_id, &payload.sealed).map_err(|err| permanent(err.to_string()))?;
    let label = template_label(&payload.template);
    let outcome = tokio::select! {
        outcome = ctx.mailer.deliver(payload.mail_id, &mail) => outcome,
        () = cancelled(cancel) => {
            metrics::counter!("reelhouse_mail_sent_total", "template" => label, "outcome" => "interrupted").increment(1);
            tracing::warn!(mail_id = %payload.mail_id, "mail send interrupted (shutdown or cancel); not delivered by this attempt");
            return Err(JobError::Cancelled);
        }
    };
    match outcome {
        Ok(delivered) => {
            metrics::counter!("reelhouse_mail_sent_total", "template" => label, "outcome" => "sent").increment(1);
            match delivered {
                // The path is fine to log; the link inside is not.
                Delivered::File(path) => {
                    tracing::info!(mail_id = %payload.mail_id, template = label, path = %path.display(), "mail written")
                }
                Delivered::Smtp => tracing::info!(mail_id = %payload.mail_id, template = label, "mail sent"),
            }
            Ok(JobOutput::MailSent)
        }
        Err(err @ (MailError::Transient(_) | MailError::Io(_))) => {
            metrics::counter!("reelhouse_mail_sent_total", "template" => label, "outcome" => "retry").increment(1);
            tracing::warn!(mail_id = %payload.mail_id, error = %err, "mail not delivered; retried later");
            Err(JobError::Retryable(err.to_string()))
        }
        Err(err) => {
            metrics::counter!("reelhouse_mail_sent_total", "template" => label, "outcome" => "failed").increment(1);
            tracing::warn!(mail_id = %payload.mail_id, error = %err, "mail cannot be delivered");
            Err(permanent(err.to_string()))
        }
    }
}
