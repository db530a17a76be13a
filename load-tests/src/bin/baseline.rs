//! `reelhouse-baseline`: the bare servers the benchmarks compare reelhouse against, in
//! the same run, with the same client:
//!
//! - `POST /graphql` answers the bytes last stored with `PUT /body` (the JSON reelhouse
//!   gave for `video(id)`): an actix endpoint that does nothing but return them;
//! - `GET /ws` is a WebSocket that receives every message published on the Redis
//!   channel `reelhouse-baseline` (one raw subscriber connection for the process, fanned
//!   out through a broadcast channel, as reelhouse does), and nothing else.
//!
//! Usage: reelhouse-baseline --bind 127.0.0.1:0 [--redis-url redis://…]; prints
//! `listening on ADDR` once bound.

use std::sync::{Arc, RwLock};

use actix::{Actor, ActorContext, AsyncContext, StreamHandler};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use clap::Parser;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

/// The channel the fan-out benchmark publishes to.
const CHANNEL: &str = "reelhouse-baseline";

#[derive(Debug, Parser)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    #[arg(long)]
    redis_url: Option<String>,
}

#[derive(Clone)]
struct Shared {
    body: Arc<RwLock<web::Bytes>>,
    events: broadcast::Sender<Arc<str>>,
}

async fn set_body(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    match shared.body.write() {
        Ok(mut stored) => {
            *stored = body;
            HttpResponse::NoContent().finish()
        }
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn graphql(shared: web::Data<Shared>, _request: web::Bytes) -> HttpResponse {
    let body = shared.body.read().map(|b| b.clone()).unwrap_or_default();
    HttpResponse::Ok().content_type("application/json").body(body)
}

/// One WebSocket client: forwards every broadcast message as a text frame.
struct Listener {
    events: Option<broadcast::Receiver<Arc<str>>>,
}

impl Actor for Listener {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(events) = self.events.take() {
            ctx.add_stream(BroadcastStream::new(events));
        }
    }
}

impl StreamHandler<Result<Arc<str>, BroadcastStreamRecvError>> for Listener {
    fn handle(&mut self, item: Result<Arc<str>, BroadcastStreamRecvError>, ctx: &mut Self::Context) {
        match item {
            Ok(text) => ctx.text(text.to_string()),
            // A lagging client loses messages: the benchmark counts them as lost.
            Err(BroadcastStreamRecvError::Lagged(_)) => {}
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Listener {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match item {
            Ok(ws::Message::Ping(bytes)) => ctx.pong(&bytes),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(_) => ctx.stop(),
            _ => {}
        }
    }
}

async fn socket(
    shared: web::Data<Shared>,
    request: HttpRequest,
    stream: web::Payload,
) -> actix_web::Result<HttpResponse> {
    ws::start(Listener { events: Some(shared.events.subscribe()) }, &request, stream)
}

/// The one Redis subscriber: every message on the channel goes to every client.
async fn relay(redis_url: String, events: broadcast::Sender<Arc<str>>) {
    loop {
        let result = async {
            let client = redis::Client::open(redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                if let Ok(payload) = message.get_payload::<String>() {
                    let _ = events.send(Arc::from(payload));
                }
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(err) = result {
            eprintln!("reelhouse-baseline: redis relay: {err:#}; retrying");
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let (events, _) = broadcast::channel(1024);
    let shared = Shared { body: Arc::new(RwLock::new(web::Bytes::from_static(b"{}"))), events: events.clone() };
    if let Some(url) = cli.redis_url.clone() {
        actix_web::rt::spawn(relay(url, events));
    }
    let data = web::Data::new(shared);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .route("/health", web::get().to(HttpResponse::Ok))
            .route("/body", web::put().to(set_body))
            .route("/graphql", web::post().to(graphql))
            .route("/ws", web::get().to(socket))
    })
    .backlog(4096)
    .bind(&cli.bind)?;
    for addr in server.addrs() {
        println!("listening on {addr}");
    }
    server.run().await
}
