//! `GET /workers/ws`: the worker channel. One `WorkerConnection` actor per remote
//! worker socket (subprotocol `reelhouse-worker.v1`, messages in
//! `jobs::remote::protocol`). The actor owns the worker's leases: it leases
//! TRANSCODE jobs for it while it has free capacity (the same lease SQL as local
//! workers), sends assignments with a presigned GET of the source, renews leases
//! on the worker's heartbeats, signs output PUTs per key (and multipart uploads of
//! large outputs, `jobs::remote::multipart`), and turns progress, log
//! lines, results and failures into queue transitions and events (`jobs::remote`).
//!
//! The token comes in the first message (`hello`), never in the URL. A socket that
//! closes keeps its leases until they expire (`jobs.lease_secs`): a worker that
//! reconnects in time resumes them by naming them in its next `hello`. A revoked
//! token closes its sockets at once (4403) and gives their leases back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, CloseCode, CloseReason, Message as WsMessage, ProtocolError, WebsocketContext};
use uuid::Uuid;

use crate::auth::worker_tokens::{self, TokenRefusal};
use crate::error::AppError;
use crate::jobs::queue::{self, Lane};
use crate::jobs::remote::protocol::CLOSE_TRY_AGAIN_LATER;
use crate::jobs::remote::protocol::{
    encoder_coverage, LeaseRef, MultipartPolicy, OutputFile, ServerMessage, WorkerMessage, CLOSE_HELLO_TIMEOUT,
    CLOSE_PROTOCOL_ERROR, CLOSE_REVOKED, CLOSE_TAGS_NOT_ALLOWED, CLOSE_UNAUTHENTICATED, CLOSE_UNSUPPORTED_VERSION,
    PROTOCOL_VERSION, SUBPROTOCOL,
};
use crate::jobs::remote::{self, TokenRevoked};
use crate::jobs::reporter::QueueReporter;
use crate::jobs::runner::{JobReporter, TranscodeOutput};
use crate::limits::{ip_subject, Policy};
use crate::state::AppState;

const PING_EVERY: Duration = Duration::from_secs(5);
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Results name every output file: a long video's list is large.
const MAX_FRAME: usize = 8 * 1024 * 1024;

pub async fn worker_socket(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let offered = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|protocols| protocols.split(',').any(|p| p.trim() == SUBPROTOCOL));
    if !offered {
        return Err(AppError::bad_input(format!("Sec-WebSocket-Protocol must be {SUBPROTOCOL}")).into());
    }
    // Every socket is charged to its address before the upgrade (429 + Retry-After
    // over the limit), and once more if it is closed before its hello is accepted.
    let subject =
        ip_subject(&crate::http::client_ip::client_addr(req.peer_addr(), req.headers(), &state.trusted_proxies));
    state.limiter.enforce(Policy::WorkerChannel, subject.clone(), 1).await?;
    let connection = WorkerConnection::new(state.get_ref().clone(), subject);
    ws::WsResponseBuilder::new(connection, &req, payload).protocols(&[SUBPROTOCOL]).frame_size(MAX_FRAME).start()
}

/// One lease this connection holds for its worker.
struct Held {
    token: Uuid,
    /// Stores progress and log lines as a local worker's would.
    reporter: Arc<QueueReporter>,
}

/// Who the socket is, once `hello` was accepted.
struct Authenticated {
    token_id: Uuid,
    capacity: usize,
    /// The tags it is routed by (`jobs.high_preset_tag`): those hello named, all
    /// of them the token's, or the token's.
    tags: Vec<String>,
    /// It has the encoders of every transcode ([`encoder_coverage`]).
    transcodes: bool,
    /// ...and of a WebM download.
    webm: bool,
}

/// What `hello` announced besides the token.
struct Announced {
    tags: Vec<String>,
    encoders: Vec<String>,
}

/// Why a `hello` is refused.
enum HelloRefusal {
    Token(TokenRefusal),
    TagsNotAllowed,
    /// The token could not be checked (the database is down or its breaker open).
    Unavailable,
}

pub struct WorkerConnection {
    state: AppState,
    /// The client address's rate-limit subject (`worker_channel` policy).
    subject: String,
    /// Also the worker's row id in `workers`.
    id: Uuid,
    auth: Option<Authenticated>,
    leases: HashMap<Uuid, Held>,
    draining: bool,
    /// A lease attempt is under way (one at a time).
    leasing: bool,
    last_heard: Instant,
    closing: bool,
    /// Jobs whose early rung is being published (`rung_ready`)...
    rungs_in_flight: HashSet<Uuid>,
    /// ...and their results, held until it is.
    deferred_results: HashMap<Uuid, DeferredResult>,
}

/// A `result` waiting for its run's early rung.
type DeferredResult = (LeaseRef, Box<TranscodeOutput>, Vec<OutputFile>);

impl WorkerConnection {
    fn new(state: AppState, subject: String) -> Self {
        Self {
            state,
            subject,
            id: Uuid::now_v7(),
            auth: None,
            leases: HashMap::new(),
            draining: false,
            leasing: false,
            last_heard: Instant::now(),
            closing: false,
            rungs_in_flight: HashSet::new(),
            deferred_results: HashMap::new(),
        }
    }

    fn send(ctx: &mut WebsocketContext<Self>, message: &ServerMessage) {
        match serde_json::to_string(message) {
            Ok(text) => ctx.text(text),
            Err(err) => tracing::warn!(error = %err, "encoding a worker channel message failed"),
        }
    }

    fn close(&mut self, ctx: &mut WebsocketContext<Self>, code: u16, reason: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        metrics::counter!("reelhouse_worker_channel_closed_total", "code" => code.to_string()).increment(1);
        if self.auth.is_none() {
            // A failed hello costs its address once more.
            let (state, subject) = (self.state.clone(), self.subject.clone());
            actix::spawn(async move {
                let _ = state.limiter.check(Policy::WorkerChannel, subject, 1).await;
            });
        }
        ctx.close(Some(CloseReason { code: CloseCode::Other(code), description: Some(reason.to_string()) }));
        ctx.stop();
    }

    fn lease_for(&self) -> Duration {
        Duration::from_secs(self.state.settings.jobs.lease_secs.max(1))
    }

    fn reporter(&self, job_id: Uuid, video_id: Option<Uuid>, token: Uuid) -> Arc<QueueReporter> {
        Arc::new(QueueReporter::start(
            self.state.db.clone(),
            self.state.publisher(),
            job_id,
            video_id,
            token,
            &self.state.settings.jobs,
        ))
    }

    /// The lease `lease` names, if this connection holds it with that token.
    fn held(&self, lease: &LeaseRef) -> Option<&Held> {
        self.leases.get(&lease.job).filter(|held| held.token == lease.lease)
    }

    fn on_message(&mut self, message: WorkerMessage, ctx: &mut WebsocketContext<Self>) {
        if self.auth.is_none() {
            match message {
                WorkerMessage::Hello { version, token, capacity, reelhouse, gstreamer, leases, tags, encoders } => {
                    let announced = Announced { tags, encoders };
                    self.hello(version, token, capacity, reelhouse, gstreamer, leases, announced, ctx)
                }
                _ => self.close(ctx, CLOSE_UNAUTHENTICATED, "UNAUTHENTICATED: the first message must be hello"),
            }
            return;
        }
        match message {
            WorkerMessage::Hello { .. } => {
                self.close(ctx, CLOSE_PROTOCOL_ERROR, "BAD_USER_INPUT: hello was sent twice")
            }
            WorkerMessage::Accept { lease } => {
                if self.held(&lease).is_some() {
                    tracing::debug!(job = %lease.job, "remote worker accepted");
                }
            }
            WorkerMessage::Reject { lease, reason } => {
                if self.held(&lease).is_some() {
                    self.leases.remove(&lease.job);
                    let (db, settings) = (self.state.db.clone(), self.state.settings.clone());
                    let reason: String = reason.chars().take(200).collect();
                    ctx.spawn(
                        async move {
                            let reason = format!("rejected by the remote worker: {reason}");
                            if let Err(err) = queue::release(&db, &settings.jobs, lease.job, lease.lease, &reason).await
                            {
                                tracing::debug!(error = %err, "releasing a rejected job");
                            }
                        }
                        .into_actor(self)
                        .map(|_, act, ctx| act.try_lease(ctx)),
                    );
                }
            }
            WorkerMessage::Heartbeat { leases } => self.heartbeat(leases, ctx),
            WorkerMessage::Progress { lease, progress } => {
                if let Some(held) = self.held(&lease) {
                    held.reporter.progress(progress);
                }
            }
            WorkerMessage::Log { lease, level, message } => {
                if let Some(held) = self.held(&lease) {
                    held.reporter.log(level, message.chars().take(2000).collect());
                }
            }
            WorkerMessage::UploadUrl { request, lease, key, content_type, size, sha256, parts }
                if !parts.is_empty() =>
            {
                let state = self.state.clone();
                ctx.spawn(
                    async move {
                        remote::multipart::open(&state, lease, &key, &content_type, size, &sha256, parts).await
                    }
                    .into_actor(self)
                    .map(move |result, _, ctx| {
                        let reply = match result {
                            Ok((upload_id, parts)) => ServerMessage::MultipartUrls { request, upload_id, parts },
                            Err(refusal) => {
                                ServerMessage::Refused { request, code: refusal.code.into(), message: refusal.message }
                            }
                        };
                        Self::send(ctx, &reply);
                    }),
                );
            }
            WorkerMessage::CompleteUpload { request, lease, key, upload_id, parts } => {
                let state = self.state.clone();
                ctx.spawn(
                    async move { remote::multipart::complete(&state, lease, &key, &upload_id, parts).await }
                        .into_actor(self)
                        .map(move |result, _, ctx| {
                            let reply = match result {
                                Ok(size) => ServerMessage::UploadDone { request, size },
                                Err(refusal) => ServerMessage::Refused {
                                    request,
                                    code: refusal.code.into(),
                                    message: refusal.message,
                                },
                            };
                            Self::send(ctx, &reply);
                        }),
                );
            }
            WorkerMessage::AbortUpload { lease, key, upload_id } => {
                let state = self.state.clone();
                ctx.spawn(
                    async move { remote::multipart::abandon(&state, lease, &key, &upload_id).await }.into_actor(self),
                );
            }
            WorkerMessage::UploadUrl { request, lease, key, content_type, size, sha256, .. } => {
                let state = self.state.clone();
                ctx.spawn(
                    async move { remote::presign_output(&state, lease, &key, &content_type, size, &sha256).await }
                        .into_actor(self)
                        .map(move |result, _, ctx| {
                            let reply = match result {
                                Ok(url) => ServerMessage::UploadUrl { request, url },
                                Err(refusal) => ServerMessage::Refused {
                                    request,
                                    code: refusal.code.into(),
                                    message: refusal.message,
                                },
                            };
                            Self::send(ctx, &reply);
                        }),
                );
            }
            WorkerMessage::Result { lease, output, files } => {
                // A result never overtakes its run's early rung: it waits for it.
                if self.rungs_in_flight.contains(&lease.job) {
                    self.deferred_results.insert(lease.job, (lease, output, files));
                } else {
                    self.finish_result(lease, output, files, ctx);
                }
            }
            WorkerMessage::RungReady { lease, rendition, files } => {
                // Not `ctx.wait`: heartbeats must keep renewing leases meanwhile.
                self.rungs_in_flight.insert(lease.job);
                let state = self.state.clone();
                ctx.spawn(
                    async move { remote::record_rung(&state, lease, &rendition, &files).await }.into_actor(self).map(
                        move |result, act, ctx| {
                            match result {
                                Ok(published) => {
                                    tracing::debug!(job = %lease.job, published, "a remote run's early rung")
                                }
                                Err(refusal) => tracing::info!(
                                    job = %lease.job,
                                    code = refusal.code,
                                    "a remote run's early rung was refused"
                                ),
                            }
                            act.rungs_in_flight.remove(&lease.job);
                            if let Some((lease, output, files)) = act.deferred_results.remove(&lease.job) {
                                act.finish_result(lease, output, files, ctx);
                            }
                        },
                    ),
                );
            }
            WorkerMessage::Failure { lease, code, message } => {
                let state = self.state.clone();
                ctx.spawn(
                    async move { remote::finish_failure(&state, lease, &code, &message).await }
                        .into_actor(self)
                        .map(move |result, act, ctx| act.finished(lease, result, ctx)),
                );
            }
            WorkerMessage::CancelAck { job } => tracing::debug!(job = %job, "remote worker acknowledged a cancel"),
            WorkerMessage::Drain => {
                self.draining = true;
                self.touch(ctx);
            }
        }
    }

    fn finish_result(
        &mut self,
        lease: LeaseRef,
        output: Box<TranscodeOutput>,
        files: Vec<OutputFile>,
        ctx: &mut WebsocketContext<Self>,
    ) {
        let state = self.state.clone();
        ctx.spawn(
            async move { remote::finish_result(&state, lease, *output, &files).await }
                .into_actor(self)
                .map(move |result, act, ctx| act.finished(lease, result, ctx)),
        );
    }

    fn finished(&mut self, lease: LeaseRef, result: Result<(), remote::Refusal>, ctx: &mut WebsocketContext<Self>) {
        if self.held(&lease).is_some() {
            self.leases.remove(&lease.job);
        }
        let (accepted, code) = match result {
            Ok(()) => (true, None),
            Err(refusal) => {
                tracing::info!(job = %lease.job, code = refusal.code, "a remote worker's outcome was refused");
                (false, Some(refusal.code.to_string()))
            }
        };
        Self::send(ctx, &ServerMessage::Finished { lease, accepted, code });
        self.touch(ctx);
        self.try_lease(ctx);
    }

    #[allow(clippy::too_many_arguments)]
    fn hello(
        &mut self,
        version: u32,
        token: String,
        capacity: u32,
        reelhouse: String,
        gstreamer: Option<String>,
        leases: Vec<LeaseRef>,
        announced: Announced,
        ctx: &mut WebsocketContext<Self>,
    ) {
        if version != PROTOCOL_VERSION {
            let reason = format!("UNSUPPORTED_VERSION: this server speaks version {PROTOCOL_VERSION}");
            return self.close(ctx, CLOSE_UNSUPPORTED_VERSION, &reason);
        }
        let Announced { tags: announced_tags, encoders } = announced;
        let (transcodes, webm) = encoder_coverage(&encoders);
        let state = self.state.clone();
        let worker_id = self.id;
        let fut = async move {
            // The `database` breaker, as for every door: open, or the token cannot be
            // checked, the worker is told to come back (1013), never that its token
            // is unknown (which would stop it for good).
            let Ok(permit) = state.breakers.database.try_acquire() else {
                return Err(HelloRefusal::Unavailable);
            };
            let row = match worker_tokens::verify_worker_token(&state.db, &token).await {
                Ok(Ok(row)) => row,
                Ok(Err(refusal)) => return Err(HelloRefusal::Token(refusal)),
                Err(err) => {
                    tracing::warn!(error = %err, "checking a worker token failed");
                    if err.code() == crate::error::ErrorCode::Unavailable {
                        // The cause was logged above; its category is not kept past
                        // the conversion into `AppError`.
                        permit.failure("connection failed");
                        return Err(HelloRefusal::Unavailable);
                    }
                    return Err(HelloRefusal::Token(TokenRefusal::Invalid));
                }
            };
            drop(permit);
            // The worker may narrow its token's tags, never add to them.
            let allowed = worker_tokens::split_tags(&row.tags);
            let asked: Vec<String> = announced_tags.iter().map(|t| t.trim().to_lowercase()).collect();
            if asked.iter().any(|tag| !allowed.contains(tag)) {
                return Err(HelloRefusal::TagsNotAllowed);
            }
            let tags = if asked.is_empty() { allowed } else { asked };
            let capacity = i32::try_from(capacity).unwrap_or(i32::MAX).clamp(1, row.capacity.max(1));
            if let Err(err) =
                remote::register_worker(&state.db, worker_id, &row, capacity, &reelhouse, gstreamer.as_deref()).await
            {
                tracing::warn!(error = %err, "registering a remote worker failed");
            }
            // Leases of an earlier connection that are still this worker's.
            let mut resumed = Vec::new();
            for lease in leases.into_iter().take(usize::try_from(capacity).unwrap_or(1)) {
                if let Ok(held) = queue::lease_state(&state.db, lease.job, lease.lease).await {
                    if held.owned {
                        let video_id = crate::repo::jobs::find(&state.db, lease.job)
                            .await
                            .ok()
                            .flatten()
                            .and_then(|job| job.video_id);
                        resumed.push((lease, video_id));
                    }
                }
            }
            Ok((row, capacity, resumed, tags))
        };
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| match result {
            Err(HelloRefusal::Token(TokenRefusal::Revoked)) => {
                act.close(ctx, CLOSE_REVOKED, "FORBIDDEN: the worker token was revoked")
            }
            Err(HelloRefusal::Token(TokenRefusal::Invalid)) => {
                act.close(ctx, CLOSE_UNAUTHENTICATED, "UNAUTHENTICATED: unknown worker token")
            }
            Err(HelloRefusal::TagsNotAllowed) => act.close(
                ctx,
                CLOSE_TAGS_NOT_ALLOWED,
                "TAGS_NOT_ALLOWED: hello named a tag the worker token does not carry",
            ),
            Err(HelloRefusal::Unavailable) => act.close(
                ctx,
                CLOSE_TRY_AGAIN_LATER,
                "UNAVAILABLE: the database is unavailable, try again later",
            ),
            Ok((row, capacity, resumed, tags)) => {
                if !transcodes {
                    tracing::warn!(worker = %act.id, ?encoders, "a remote worker lacks the encoders every transcode needs; it gets no jobs");
                }
                act.auth = Some(Authenticated {
                    token_id: row.id,
                    capacity: usize::try_from(capacity).unwrap_or(1),
                    tags,
                    transcodes,
                    webm,
                });
                act.state.remote_workers.register(act.id, row.id, ctx.address().recipient());
                metrics::counter!("reelhouse_worker_channel_connected_total").increment(1);
                tracing::info!(worker = %act.id, token = %row.prefix, name = %row.name, capacity, "remote worker connected");
                for (lease, video_id) in &resumed {
                    let reporter = act.reporter(lease.job, *video_id, lease.lease);
                    act.leases.insert(lease.job, Held { token: lease.lease, reporter });
                }
                let resumed: Vec<LeaseRef> = resumed.into_iter().map(|(lease, _)| lease).collect();
                let settings = &act.state.settings;
                let heartbeat_secs = (settings.jobs.lease_secs / 3).clamp(1, settings.jobs.heartbeat_secs.max(1));
                Self::send(
                    ctx,
                    &ServerMessage::Welcome {
                        worker_id: act.id,
                        lease_secs: settings.jobs.lease_secs,
                        heartbeat_secs,
                        resumed,
                        multipart: Some(MultipartPolicy {
                            threshold_bytes: settings.workers.remote_multipart_threshold_bytes,
                            part_bytes: settings.workers.remote_part_bytes,
                        }),
                    },
                );
                let every = Duration::from_millis(settings.jobs.poll_interval_ms.max(10));
                ctx.run_interval(every, |act, ctx| act.try_lease(ctx));
                act.try_lease(ctx);
            }
        }));
    }

    /// Lease one more job when the worker has room.
    fn try_lease(&mut self, ctx: &mut WebsocketContext<Self>) {
        let Some(auth) = &self.auth else { return };
        if self.closing || self.draining || self.leasing || !auth.transcodes || self.leases.len() >= auth.capacity {
            return;
        }
        self.leasing = true;
        let (tags, webm) = (auth.tags.clone(), auth.webm);
        let state = self.state.clone();
        let owner = remote::lease_owner(self.id);
        let lease_for = self.lease_for();
        let fut = async move {
            let leased =
                queue::lease_routed(&state.db, &owner, Lane::Remote, lease_for, &state.settings.jobs, &tags, webm)
                    .await?;
            let Some(leased) = leased else { return Ok(None) };
            let prepared = remote::prepare_assignment(&state, &leased).await?;
            Ok::<_, queue::QueueError>(prepared.map(|assignment| (leased, assignment)))
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.leasing = false;
            match result {
                Ok(Some((leased, (spec, source, publish_early)))) => {
                    let lease = LeaseRef { job: leased.job.id, lease: leased.token };
                    if act.closing {
                        // The socket went away meanwhile: the lease expires and is swept.
                        return;
                    }
                    let reporter = act.reporter(leased.job.id, leased.job.video_id, leased.token);
                    act.leases.insert(lease.job, Held { token: lease.lease, reporter });
                    tracing::info!(job = %lease.job, worker = %act.id, "assigned to a remote worker");
                    Self::send(ctx, &ServerMessage::Assign { lease, spec: Box::new(spec), source, publish_early });
                    act.touch(ctx);
                    act.try_lease(ctx);
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "leasing for a remote worker failed"),
            }
        }));
    }

    /// Renew every lease the worker names that this connection holds; tell it which
    /// are lost or cancelled. The token is re-checked too (a revocation on another
    /// replica arrives here).
    fn heartbeat(&mut self, leases: Vec<LeaseRef>, ctx: &mut WebsocketContext<Self>) {
        let Some(auth) = &self.auth else { return };
        let token_id = auth.token_id;
        let mine: Vec<LeaseRef> = leases.into_iter().filter(|l| self.held(l).is_some()).collect();
        let (db, lease_for) = (self.state.db.clone(), self.lease_for());
        let fut = async move {
            let live = worker_tokens::is_live(&db, token_id).await.unwrap_or(true);
            let mut states = Vec::with_capacity(mine.len());
            for lease in mine {
                match queue::heartbeat(&db, lease.job, lease.lease, lease_for).await {
                    Ok(state) => states.push((lease, state)),
                    Err(err) => tracing::warn!(error = %err, job = %lease.job, "renewing a remote lease failed"),
                }
            }
            (live, states)
        };
        ctx.spawn(fut.into_actor(self).map(|(live, states), act, ctx| {
            if !live {
                return act.revoked(ctx);
            }
            for (lease, state) in states {
                if !state.owned {
                    act.leases.remove(&lease.job);
                }
                Self::send(ctx, &ServerMessage::Lease { lease, owned: state.owned, cancel: state.cancel_requested });
                if state.owned && state.cancel_requested {
                    Self::send(ctx, &ServerMessage::Cancel { job: lease.job });
                }
            }
            act.touch(ctx);
        }));
    }

    /// Record the worker as seen, with its jobs and state.
    fn touch(&mut self, ctx: &mut WebsocketContext<Self>) {
        let (db, id, current, draining) = (self.state.db.clone(), self.id, self.leases.len(), self.draining);
        ctx.spawn(
            async move {
                if let Err(err) = remote::touch_worker(&db, id, current, draining).await {
                    tracing::debug!(error = %err, "touching a remote worker's row failed");
                }
            }
            .into_actor(self),
        );
    }

    /// The token is gone: give every lease back to the queue, then close.
    fn revoked(&mut self, ctx: &mut WebsocketContext<Self>) {
        let release = self.release_all_and_close();
        ctx.wait(release);
    }

    /// Release every lease (no attempt spent), then close with 4403.
    fn release_all_and_close(&mut self) -> impl ActorFuture<Self, Output = ()> {
        let leases: Vec<LeaseRef> =
            self.leases.drain().map(|(job, held)| LeaseRef { job, lease: held.token }).collect();
        let (db, settings) = (self.state.db.clone(), self.state.settings.clone());
        async move {
            for lease in leases {
                if let Err(err) =
                    queue::release(&db, &settings.jobs, lease.job, lease.lease, "worker token revoked").await
                {
                    tracing::debug!(error = %err, "releasing a revoked worker's job");
                }
            }
        }
        .into_actor(self)
        .map(|_, act, ctx| act.close(ctx, CLOSE_REVOKED, "FORBIDDEN: the worker token was revoked"))
    }
}

impl Actor for WorkerConnection {
    type Context = WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_later(HELLO_TIMEOUT, |act, ctx| {
            if act.auth.is_none() {
                act.close(ctx, CLOSE_HELLO_TIMEOUT, "UNAUTHENTICATED: no hello in time");
            }
        });
        ctx.run_interval(PING_EVERY, |act, ctx| {
            if act.last_heard.elapsed() > PEER_TIMEOUT {
                tracing::info!(worker = %act.id, "remote worker silent; closing");
                ctx.stop();
                return;
            }
            ctx.ping(b"");
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.state.remote_workers.unregister(self.id);
        if self.auth.is_some() {
            // Leases stay: they expire after `jobs.lease_secs` unless the worker
            // reconnects and resumes them.
            let (db, id) = (self.state.db.clone(), self.id);
            actix::spawn(async move { remote::deregister_worker(&db, id).await });
            tracing::info!(worker = %self.id, leases = self.leases.len(), "remote worker disconnected");
        }
    }
}

impl Handler<TokenRevoked> for WorkerConnection {
    /// Answered once the leases are back in the queue (`revokeWorkerToken` waits).
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: TokenRevoked, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.release_all_and_close())
    }
}

impl StreamHandler<Result<WsMessage, ProtocolError>> for WorkerConnection {
    fn handle(&mut self, item: Result<WsMessage, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(WsMessage::Text(text)) => match serde_json::from_str::<WorkerMessage>(&text) {
                Ok(message) => self.on_message(message, ctx),
                Err(_) => self.close(ctx, CLOSE_PROTOCOL_ERROR, "BAD_USER_INPUT: not a worker channel message"),
            },
            Ok(WsMessage::Ping(bytes)) => ctx.pong(&bytes),
            Ok(WsMessage::Pong(_)) => {}
            Ok(WsMessage::Close(_)) => ctx.stop(),
            Ok(WsMessage::Binary(_)) | Ok(WsMessage::Continuation(_)) => {
                self.close(ctx, CLOSE_PROTOCOL_ERROR, "BAD_USER_INPUT: messages are JSON text frames")
            }
            Ok(WsMessage::Nop) => {}
            Err(_) => ctx.stop(),
        }
    }
}
