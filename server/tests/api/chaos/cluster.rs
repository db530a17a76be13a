//! A deployment of real processes for the fault matrix: `reelhouse serve` replicas
//! and `reelhouse worker` processes sharing one PostgreSQL database (reached through
//! a [`TcpProxy`]), one `redis-server` of the test's own and one S3 key prefix, with
//! a round-robin balancer in front of the replicas.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entities::worker;
use reelhouse::config::{SecretUrl, Settings};
use sea_orm::{Database, DatabaseConnection, EntityTrait, PaginatorTrait};

use crate::helpers::{
    backend, eventually, reelhouse_command, socket_of, test_settings, Backend, ServerProcess, TcpProxy,
};
use crate::redis_restart::OwnRedis;
use crate::worker_process::{apply_shared_settings, worker_command};

/// How much work a fault runs through: `short` in `make test`, `full` in `make chaos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    Short,
    Full,
}

impl Scale {
    /// The scale asked for, or `None` (with a line saying why the test is skipped).
    pub(crate) fn from_env(test: &str) -> Option<Self> {
        let scale = match std::env::var("REELHOUSE_CHAOS").as_deref() {
            Ok("short") => Scale::Short,
            Ok("full") => Scale::Full,
            _ => {
                eprintln!(
                    "{test}: skipped: the fault matrix runs with REELHOUSE_CHAOS=short|full (scripts/test-chaos.sh, make chaos)"
                );
                return None;
            }
        };
        if backend() != Backend::Postgres {
            eprintln!(
                "{test}: skipped: the fault matrix runs several processes on PostgreSQL + Redis + S3 (REELHOUSE_TEST_BACKEND=postgres)"
            );
            return None;
        }
        Some(scale)
    }

    pub(crate) fn users(self) -> usize {
        match self {
            Scale::Short => 2,
            Scale::Full => 3,
        }
    }

    pub(crate) fn videos_per_user(self) -> usize {
        match self {
            Scale::Short => 2,
            Scale::Full => 4,
        }
    }
}

/// Round robin over the replicas that are in rotation (a load balancer whose health
/// check has taken a dead or draining replica out).
#[derive(Clone, Default)]
pub(crate) struct Balancer {
    inner: Arc<Mutex<Rotation>>,
}

/// The replicas (address, in rotation) and the round-robin counter.
type Rotation = (Vec<(String, bool)>, usize);

impl Balancer {
    pub(crate) fn add(&self, address: &str) {
        self.inner.lock().unwrap().0.push((address.to_string(), true));
    }

    pub(crate) fn take_out(&self, address: &str) {
        for (a, up) in &mut self.inner.lock().unwrap().0 {
            if a == address {
                *up = false;
            }
        }
    }

    /// The next replica in rotation.
    pub(crate) fn pick(&self) -> String {
        let mut inner = self.inner.lock().unwrap();
        let up: Vec<String> = inner.0.iter().filter(|(_, up)| *up).map(|(a, _)| a.clone()).collect();
        assert!(!up.is_empty(), "no replica in rotation");
        inner.1 = inner.1.wrapping_add(1);
        up[inner.1 % up.len()].clone()
    }

    pub(crate) fn in_rotation(&self) -> Vec<String> {
        self.inner.lock().unwrap().0.iter().filter(|(_, up)| *up).map(|(a, _)| a.clone()).collect()
    }
}

pub(crate) struct Replica {
    pub(crate) server: Option<ServerProcess>,
    pub(crate) address: String,
    _dir: tempfile::TempDir,
}

pub(crate) struct WorkerProcess {
    /// Its `HOSTNAME`, so the prefix of the jobs' `lease_owner`.
    pub(crate) name: String,
    pub(crate) child: Option<tokio::process::Child>,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) struct Cluster {
    /// What every process shares (database URL through the proxy, own Redis, S3).
    pub(crate) settings: Settings,
    /// The database directly (not through the proxy): the test's own observations.
    pub(crate) db: DatabaseConnection,
    pub(crate) pg_proxy: TcpProxy,
    /// In front of S3 when the fault needs it (stalls, 5xx bursts).
    pub(crate) s3_proxy: Option<FaultyProxy>,
    pub(crate) redis: OwnRedis,
    pub(crate) replicas: Vec<Replica>,
    pub(crate) workers: Vec<WorkerProcess>,
    pub(crate) balancer: Balancer,
    /// Settings added by the fault (`REELHOUSE__…`, value).
    extra: Vec<(String, String)>,
    _data: tempfile::TempDir,
}

impl Cluster {
    /// `replicas` API processes and `workers` worker processes, all up and registered.
    pub(crate) async fn start(replicas: usize, workers: usize, extra: &[(&str, &str)]) -> Self {
        Self::start_with(replicas, workers, extra, false).await
    }

    /// As [`Cluster::start`], with every process reaching S3 through a [`FaultyProxy`]
    /// when `s3_proxy`.
    pub(crate) async fn start_with(replicas: usize, workers: usize, extra: &[(&str, &str)], s3_proxy: bool) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut settings = test_settings(data.path()).await;
        crate::uploads::short_s3_prefix(&mut settings);
        let s3_proxy = if s3_proxy {
            let endpoint = settings.storage.s3.endpoint.clone().unwrap();
            let proxy = FaultyProxy::start(socket_of(&endpoint)).await;
            settings.storage.s3.endpoint = Some(format!("http://127.0.0.1:{}", proxy.port));
            Some(proxy)
        } else {
            None
        };
        let direct = settings.database.url.as_ref().unwrap().expose().to_string();
        let pg_proxy = TcpProxy::start(socket_of(&direct)).await;
        let mut proxied = url::Url::parse(&direct).unwrap();
        proxied.set_port(Some(pg_proxy.port)).unwrap();
        settings.database.url = Some(SecretUrl::new(proxied.to_string()));
        let redis = OwnRedis::start().await;
        settings.redis.url = Some(SecretUrl::new(redis.url()));
        let db = Database::connect(&direct).await.expect("connect to the test database");
        let mut cluster = Self {
            settings,
            db,
            pg_proxy,
            s3_proxy,
            redis,
            replicas: Vec::new(),
            workers: Vec::new(),
            balancer: Balancer::default(),
            extra: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            _data: data,
        };
        // One at a time: the first one migrates the database.
        for _ in 0..replicas {
            cluster.start_replica().await;
        }
        for _ in 0..workers {
            cluster.start_worker();
        }
        let db = cluster.db.clone();
        assert!(
            eventually(600, || async { worker::Entity::find().count(&db).await.unwrap_or(0) == workers as u64 }).await,
            "the workers register:\n{}",
            cluster.logs()
        );
        cluster
    }

    /// The settings of every process, on top of the shared ones.
    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("REELHOUSE__REDIS__URL", self.redis.url()),
            ("REELHOUSE__REDIS__KEY_PREFIX", self.settings.redis.key_prefix.clone()),
            ("REELHOUSE__DATABASE__CONNECT_TIMEOUT_SECS", "1".into()),
            ("REELHOUSE__DATABASE__MAX_CONNECTIONS", "5".into()),
            ("REELHOUSE__WORKERS__EMBEDDED", "false".into()),
            ("REELHOUSE__WORKERS__HEARTBEAT_SECS", "1".into()),
            ("REELHOUSE__AUTH__UNVERIFIED_CAN_UPLOAD", "true".into()),
            ("REELHOUSE__RATE_LIMIT__ENABLED", "false".into()),
            ("REELHOUSE__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true".into()),
            ("REELHOUSE__WEBHOOKS__POLL_INTERVAL_MS", "200".into()),
            ("REELHOUSE__GRAPHQL__WS_MAX_SOCKETS_PER_IP", "100000".into()),
            ("REELHOUSE__GRAPHQL__WS_MAX_SOCKETS_PER_USER", "100000".into()),
            ("REELHOUSE__GRAPHQL__WS_MAX_SUBSCRIPTIONS_PER_USER", "100000".into()),
            ("REELHOUSE__MEDIA__LADDER", "[{lines=240,video_bitrate_kbps=300}]".into()),
            ("REELHOUSE__MEDIA__SPEED_PRESET", "ultrafast".into()),
            ("REELHOUSE__MEDIA__SEGMENT_SECONDS", "1".into()),
            ("REELHOUSE__JOBS__LEASE_SECS", "5".into()),
            ("REELHOUSE__JOBS__HEARTBEAT_SECS", "1".into()),
            ("REELHOUSE__JOBS__SWEEP_INTERVAL_SECS", "1".into()),
            ("REELHOUSE__JOBS__POLL_INTERVAL_MS", "100".into()),
            ("REELHOUSE__JOBS__BACKOFF_BASE_SECS", "1".into()),
            ("REELHOUSE__SERVER__SHUTDOWN_TIMEOUT_SECS", "10".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(self.extra.iter().cloned());
        env
    }

    pub(crate) async fn start_replica(&mut self) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = reelhouse_command();
        cmd.arg("--data-dir").arg(dir.path());
        apply_shared_settings(&mut cmd, &self.settings);
        for (key, value) in self.env() {
            cmd.env(key, value);
        }
        cmd.env("HOSTNAME", format!("chaos-api{}", self.replicas.len()));
        let server = ServerProcess::serve(cmd).await;
        let address = server.address.clone();
        self.balancer.add(&address);
        self.replicas.push(Replica { server: Some(server), address: address.clone(), _dir: dir });
        address
    }

    pub(crate) fn start_worker(&mut self) {
        self.start_worker_with(&[]);
    }

    /// A worker process with more environment (e.g. libfaketime's, for a skewed clock).
    pub(crate) fn start_worker_with(&mut self, more: &[(&str, &str)]) {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("chaos-w{}", self.workers.len());
        let env = self.env();
        let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        extra.push(("HOSTNAME", name.as_str()));
        extra.extend_from_slice(more);
        let child = worker_command(&self.settings, dir.path(), &extra).spawn().unwrap();
        self.workers.push(WorkerProcess { name, child: Some(child), dir });
    }

    /// SIGKILL a replica (no goodbye to its clients) and take it out of rotation.
    pub(crate) async fn kill_replica(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        self.balancer.take_out(&replica.address);
        let mut server = replica.server.take().expect("the replica runs");
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        replica.server = Some(server);
    }

    /// The pid of a running replica.
    pub(crate) fn replica_pid(&self, index: usize) -> u32 {
        self.replicas[index].server.as_ref().and_then(|s| s.child.id()).expect("the replica runs")
    }

    /// SIGKILL the worker whose lease owner is `lease_owner`; returns its index.
    pub(crate) async fn kill_worker_holding(&mut self, lease_owner: &str) -> usize {
        // The lease owner is the worker's registration id; its row has the pid.
        let pid = match uuid::Uuid::parse_str(lease_owner) {
            Ok(id) => worker::Entity::find_by_id(id).one(&self.db).await.unwrap().map(|w| w.pid as u32),
            Err(_) => None,
        };
        let index = self
            .workers
            .iter()
            .position(|w| {
                lease_owner.starts_with(&format!("{}-", w.name))
                    || (pid.is_some() && w.child.as_ref().and_then(|c| c.id()) == pid)
            })
            .unwrap_or_else(|| panic!("no worker process holds lease owner {lease_owner} (pid {pid:?})"));
        let mut child = self.workers[index].child.take().expect("the worker runs");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        index
    }

    /// The Redis channel the replicas' event relays subscribe to.
    pub(crate) fn events_channel(&self) -> String {
        format!("{}events", self.settings.redis.key_prefix)
    }

    /// Every replica's relay is subscribed again (after a Redis restart).
    pub(crate) async fn relays_subscribed(&self) -> bool {
        let running = self.replicas.iter().filter(|r| r.server.is_some()).count() as i64;
        self.redis.subscribers(&self.events_channel()).await >= running
    }

    /// The tail of every process's log, for failure messages.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for (i, replica) in self.replicas.iter().enumerate() {
            if let Some(server) = &replica.server {
                let text = server.stderr();
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                out.push_str(&format!("--- replica {i} ({}):\n", replica.address));
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        for worker in &self.workers {
            let text = std::fs::read_to_string(worker.dir.path().join("worker.log")).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            out.push_str(&format!("--- worker {}:\n", worker.name));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Lines of any process's log that report a panic.
    pub(crate) fn panics(&self) -> Vec<String> {
        let mut texts: Vec<String> =
            self.replicas.iter().filter_map(|r| r.server.as_ref()).map(|server| server.stderr()).collect();
        for worker in &self.workers {
            texts.push(std::fs::read_to_string(worker.dir.path().join("worker.log")).unwrap_or_default());
        }
        texts.iter().flat_map(|t| t.lines()).filter(|l| l.contains("panicked at")).map(str::to_string).collect()
    }

    /// SIGTERM every process still running and wait for it.
    pub(crate) async fn stop(&mut self) {
        for worker in &mut self.workers {
            if let Some(mut child) = worker.child.take() {
                crate::worker_process::sigterm(&child);
                let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
            }
        }
        for replica in &mut self.replicas {
            // Kept (exited), so its log stays readable.
            if let Some(server) = replica.server.as_mut() {
                if server.child.try_wait().ok().flatten().is_none() {
                    crate::worker_process::sigterm(&server.child);
                    let _ = tokio::time::timeout(Duration::from_secs(30), server.child.wait()).await;
                }
            }
        }
    }
}

/// Poll `check` every 100 ms until it returns true or `limit` passes; returns how long
/// it took (a recovery time, printed, never asserted).
pub(crate) async fn time_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// What a [`FaultyProxy`] does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyMode {
    Pass,
    /// Hold every byte (both ways, open and new connections) until the mode changes.
    Stall,
    /// Cut the open connections and answer every new request `503 Slow Down` (as S3
    /// does when it sheds load), then close.
    Fail,
}

/// A TCP proxy in front of an HTTP dependency (S3) that can hold bytes or answer 503.
pub(crate) struct FaultyProxy {
    pub(crate) port: u16,
    mode: tokio::sync::watch::Sender<ProxyMode>,
}

impl FaultyProxy {
    pub(crate) async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, rx) = tokio::sync::watch::channel(ProxyMode::Pass);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(proxy_connection(inbound, upstream, rx.clone()));
            }
        });
        Self { port, mode }
    }

    pub(crate) fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }
}

async fn proxy_connection(
    mut inbound: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    rx: tokio::sync::watch::Receiver<ProxyMode>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let failing = *rx.borrow() == ProxyMode::Fail;
    if failing {
        // Read the request head, answer 503, close.
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let read_head = async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match inbound.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), read_head).await;
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        let response = format!(
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = inbound.write_all(response.as_bytes()).await;
        let _ = inbound.shutdown().await;
        return;
    }
    let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
    let (from_client, to_client) = inbound.into_split();
    let (from_upstream, to_upstream) = outbound.into_split();
    tokio::join!(pump(from_client, to_upstream, rx.clone()), pump(from_upstream, to_client, rx));
}

/// Copy one direction, holding bytes while stalled and stopping when failing.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: tokio::sync::watch::Receiver<ProxyMode>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut failing = rx.clone();
        let read = tokio::select! {
            read = from.read(&mut buf) => Some(read),
            _ = async { let _ = failing.wait_for(|m| *m == ProxyMode::Fail).await; } => None,
        };
        let n = match read {
            None => return,
            Some(Ok(0)) | Some(Err(_)) => {
                let _ = to.shutdown().await;
                return;
            }
            Some(Ok(n)) => n,
        };
        loop {
            let mode = *rx.borrow_and_update();
            match mode {
                ProxyMode::Pass => break,
                ProxyMode::Fail => return,
                ProxyMode::Stall => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
