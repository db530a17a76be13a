#!/usr/bin/env python3
"""Remote-worker benchmark (issue 21): what the worker channel costs an encode.

Not a test: prints figures and ratios against a baseline measured in the same run,
never asserts timings. Real processes from one release binary: `reelhouse serve` on
PostgreSQL + S3-compatible storage (+ Redis) with no embedded workers, and per run:

  A  1 database-attached `reelhouse worker` (capacity C)           the baseline
  B  1 remote `reelhouse worker --server URL` (capacity C), with only
     REELHOUSE_WORKER_TOKEN in its environment (no DB, Redis or S3 settings: checked)
  C  1 local + 1 remote worker (capacity C each)

Each run uploads N copies of a generated clip through the public API (createVideo,
createUpload, a presigned PUT), then completes the N uploads back to back
(completeUpload enqueues one TRANSCODE job each) and polls the API until every job
ended. Worker processes are started before the uploads and stopped after the run.
Runs alternate A, B, C, A, B, C, ... BENCH_RUNS times, to spread the noise of a
shared machine over all three; the figures are medians with their spread.

Measured per run, from the jobs' own timestamps (the API: createdAt, finishedAt,
and the `at` of their log lines):
  makespan     first job created -> last job finished
  job          a job's lease ("attempt 1 of 5 leased by ...") -> its finishedAt
  stages       lease -> "probing" (assignment), -> "probed" (source download + probe),
               -> "packaging" (the ladder), -> "uploading" (MP4, thumbnails),
               -> "done" (output upload), -> finishedAt (result accepted)
  CPU          user+sys seconds of the worker processes (with their media children)
               and of the server (and of s3s-fs when this script knows its pid)
The channel's overhead is (B - A) / A, per round (each B against the A of its own
round), of the makespan, of the sum of job durations and of the median job.

Environment:
  BENCH_REMOTE_ENCODES   N, encodes per run (default 4)
  BENCH_REMOTE_CAPACITY  C, jobs at once per worker (default 1)
  BENCH_RUNS             rounds of A,B,C (default 2, at least 1)
  BENCH_REMOTE_SECONDS   clip length (default 10; 720p30 H.264 + AAC, cached)
  BENCH_REMOTE_HEIGHT    clip height (default 720; 16:9)
  BENCH_REMOTE_CONFIGS   which runs, e.g. "A,B" (default A,B,C)
  BENCH_PROFILE          cargo profile when building: release (default) or dev
  REELHOUSE_BIN          a built reelhouse binary (skips the build)
  CARGO_TARGET_DIR       where cargo builds; the clip goes to $CARGO_TARGET_DIR/bench-fixtures
  BENCH_DOCS_DIR         where remote.md/.json are written (default docs/bench)
  BENCH_REMOTE_KEEP      1: keep the work directory (process logs) and the database
Services: REELHOUSE_TEST_PG_URL, REELHOUSE_TEST_REDIS_URL, REELHOUSE_TEST_S3_* as
scripts/test-services.sh writes them (taken from the environment, else from
.test-services/env, else `scripts/test-services.sh start` is run and stopped after).
The benchmark uses its own database (bench_remote_<pid>), Redis key prefix and S3 key
prefix; REELHOUSE_TEST_REDIS_URL="" runs without Redis.
"""

import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
N = max(1, int(os.environ.get("BENCH_REMOTE_ENCODES", "4")))
CAPACITY = max(1, int(os.environ.get("BENCH_REMOTE_CAPACITY", "1")))
RUNS = max(1, int(os.environ.get("BENCH_RUNS", "2")))
SECONDS = max(1, int(os.environ.get("BENCH_REMOTE_SECONDS", "10")))
HEIGHT = int(os.environ.get("BENCH_REMOTE_HEIGHT", "720"))
WIDTH = (HEIGHT * 16 // 9) // 2 * 2
CONFIGS = [c.strip().upper() for c in os.environ.get("BENCH_REMOTE_CONFIGS", "A,B,C").split(",") if c.strip()]
PROFILE = os.environ.get("BENCH_PROFILE", "release")
KEEP = os.environ.get("BENCH_REMOTE_KEEP") == "1"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
DOCS = Path(os.environ.get("BENCH_DOCS_DIR", ROOT / "docs" / "bench"))
FIXTURES = TARGET / "bench-fixtures"
FPS = 30
RUN_TIMEOUT = 1800  # seconds one run may take before the benchmark gives up
WORKERS = {"A": (1, 0), "B": (0, 1), "C": (1, 1)}  # (local, remote) processes
LABEL = {
    "A": "A: 1 local worker (baseline)",
    "B": "B: 1 remote worker",
    "C": "C: 1 local + 1 remote",
}
ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "bench remote pass 9"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STAGES = [
    # (name, the log line that starts it: prefix of its message)
    ("assign", None),  # from the lease line
    ("fetch+probe", "probing:"),
    ("encode", "probed:"),
    ("package", "packaging:"),
    ("upload", "uploading:"),
    ("finalize", "done:"),
]
# The stages that move bytes and messages (the rest is the jailed child's encoding,
# the same code for both kinds of worker; a first transcode's early rung is uploaded
# inside "encode" by both).
TRANSFER = ["assign", "fetch+probe", "upload", "finalize"]
# Everything that names a service or credential: never in a remote worker's environment.
SECRET_ENV = re.compile(r"^(DATABASE_URL|REDIS_URL|S3_.*|AWS_.*|PG.*|SMTP_.*|REELHOUSE_.*)$")


def log(msg):
    print(f"[bench-remote] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- setup


def build_binary():
    if os.environ.get("REELHOUSE_BIN"):
        return Path(os.environ["REELHOUSE_BIN"]).resolve()
    return benchlib.cargo_build(["--bin", "reelhouse"], "reelhouse", TARGET, PROFILE, log)


def ensure_clip():
    """A WIDTHxHEIGHT 30 fps H.264 + AAC MP4 from GStreamer test sources, cached."""
    return benchlib.test_clip(
        FIXTURES / f"clip-{HEIGHT}p30-{SECONDS}s.mp4",
        width=WIDTH, height=HEIGHT, fps=FPS, seconds=SECONDS, video_kbps=4000, faststart=True, log=log,
    )


def read_env_file(path):
    """The `export NAME=value` lines of .test-services/env (values may be %q-quoted)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^export ([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            value = subprocess.run(["bash", "-c", f"printf %s {m.group(2)}"], capture_output=True, text=True).stdout
            out[m.group(1)] = value
    return out


def read_state(path):
    out = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                out[k] = v.strip("'\"")
    return out


class Services:
    """The test services: from the environment, .test-services/env, or started here."""

    def __init__(self):
        self.started = False
        keys = ["REELHOUSE_TEST_PG_URL", "REELHOUSE_TEST_S3_ENDPOINT"]
        env_file = ROOT / ".test-services" / "env"
        if all(os.environ.get(k) for k in keys):
            self.env = dict(os.environ)
            log("services: from the environment")
        else:
            if not env_file.exists():
                log("services: scripts/test-services.sh start")
                subprocess.run([str(ROOT / "scripts" / "test-services.sh"), "start"], cwd=ROOT, check=True)
                self.started = True
            else:
                log(f"services: {env_file}")
            self.env = read_env_file(env_file)
            if "REELHOUSE_TEST_REDIS_URL" in os.environ:
                self.env["REELHOUSE_TEST_REDIS_URL"] = os.environ["REELHOUSE_TEST_REDIS_URL"]
        s3 = read_state(ROOT / ".test-services" / "s3.state")
        # s3s-fs's pid (for its CPU) and data dir (to remove our objects), when it is ours.
        self.s3_pid = int(s3["S3_PID"]) if s3.get("S3_PID", "").isdigit() else None
        if self.s3_pid and not Path(f"/proc/{self.s3_pid}").exists():
            self.s3_pid = None
        self.s3_root = Path(s3["S3_DIR"]) / "root" if s3.get("S3_DIR") else None

    def stop(self):
        if self.started:
            subprocess.run([str(ROOT / "scripts" / "test-services.sh"), "stop"], cwd=ROOT)


def psql(url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def with_db(url, name):
    p = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(p._replace(path="/" + name))


# ------------------------------------------------------------- processes


def cpu_seconds(pid):
    """utime + stime + cutime + cstime of a live process (its reaped children included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


def tree_cpu(pid):
    """CPU of a process and of its live descendants (media children still running)."""
    total = cpu_seconds(pid) or 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        total += tree_cpu(int(child))
    return total


def environment_of(pid):
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return []
    return [kv.decode(errors="replace") for kv in raw.split(b"\0") if kv]


class Proc:
    def __init__(self, name, cmd, env, workdir):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self, timeout=60):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop in {timeout} s: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


# ------------------------------------------------------------------- API


class Api:
    def __init__(self, base):
        self.base = urllib.parse.urlsplit(base)
        self.token = None

    def gql(self, query, variables=None, auth=True):
        for attempt in range(2):
            conn = http.client.HTTPConnection(self.base.hostname, self.base.port, timeout=120)
            headers = {"content-type": "application/json"}
            if auth and self.token:
                headers["authorization"] = f"Bearer {self.token}"
            conn.request("POST", "/graphql", json.dumps({"query": query, "variables": variables or {}}), headers)
            answer = json.loads(conn.getresponse().read())
            conn.close()
            errors = answer.get("errors")
            if errors and auth and attempt == 0 and any(
                (e.get("extensions") or {}).get("code") == "UNAUTHENTICATED" for e in errors
            ):
                self.login()  # the access token expired during a long run
                continue
            if errors:
                raise RuntimeError(f"GraphQL errors: {errors}")
            return answer["data"]
        raise RuntimeError("unreachable")

    def login(self):
        data = self.gql("mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
                        {"i": {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}}, auth=False)
        self.token = data["login"]["accessToken"]

    def healthy(self):
        try:
            conn = http.client.HTTPConnection(self.base.hostname, self.base.port, timeout=2)
            conn.request("GET", "/health")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False


def put(url, headers, body):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    path = u.path + ("?" + u.query if u.query else "")
    conn.request("PUT", path, body, {**headers, "content-length": str(len(body))})
    res = conn.getresponse()
    res.read()
    conn.close()
    if res.status // 100 != 2:
        raise RuntimeError(f"PUT of the source answered {res.status}")


def parse_at(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------ the bench


class Bench:
    def __init__(self, binary, clip, services):
        self.binary = binary
        self.clip_bytes = clip.read_bytes()
        self.clip = clip
        self.services = services
        self.workdir = Path(tempfile.mkdtemp(prefix="reelhouse-bench-remote-"))
        self.tag = f"bench_remote_{os.getpid()}"
        svc = services.env
        self.db_url = with_db(svc["REELHOUSE_TEST_PG_URL"], self.tag)
        redis = svc.get("REELHOUSE_TEST_REDIS_URL", "")
        self.prefix = f"br{os.getpid()}/"
        base = {k: v for k, v in os.environ.items() if not SECRET_ENV.match(k)}
        base.pop("RUST_LOG", None)
        base.update(REELHOUSE__TELEMETRY__FORMAT="json", REELHOUSE__TELEMETRY__LEVEL="info")
        self.base_env = base
        # What the server and database-attached workers are given.
        self.service_env = dict(
            base,
            DATABASE_URL=self.db_url,
            S3_ENDPOINT=svc["REELHOUSE_TEST_S3_ENDPOINT"],
            S3_BUCKET=svc["REELHOUSE_TEST_S3_BUCKET"],
            S3_REGION=svc["REELHOUSE_TEST_S3_REGION"],
            S3_ACCESS_KEY_ID=svc["REELHOUSE_TEST_S3_ACCESS_KEY_ID"],
            S3_SECRET_ACCESS_KEY=svc["REELHOUSE_TEST_S3_SECRET_ACCESS_KEY"],
            REELHOUSE__STORAGE__S3__KEY_PREFIX=self.prefix,
            REELHOUSE__AUTH__JWT_SECRET=os.urandom(32).hex(),
            REELHOUSE__WORKERS__CONCURRENCY=str(CAPACITY),
            REELHOUSE__SERVER__SHUTDOWN_TIMEOUT_SECS="10",
        )
        if redis:
            self.service_env.update(REDIS_URL=redis, REELHOUSE__REDIS__KEY_PREFIX=f"{self.tag}:")
        self.secrets = [self.db_url, svc["REELHOUSE_TEST_S3_SECRET_ACCESS_KEY"], svc["REELHOUSE_TEST_S3_ACCESS_KEY_ID"]]
        self.server = None
        self.procs = []
        self.db_created = False

    # ---- one-time setup

    def setup(self):
        log(f"work dir {self.workdir}; database {self.tag}; S3 prefix {self.prefix}")
        psql(self.services.env["REELHOUSE_TEST_PG_URL"], f"CREATE DATABASE {self.tag}")
        self.db_created = True
        cli_env = dict(self.service_env, REELHOUSE_ADMIN_PASSWORD=ADMIN_PASSWORD)
        data = self.workdir / "cli-data"
        subprocess.run([str(self.binary), "--data-dir", str(data), "create-admin", "--email", ADMIN_EMAIL],
                       env=cli_env, cwd=self.workdir, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        out = subprocess.run([str(self.binary), "--data-dir", str(data), "worker-token", "create",
                              "--name", "bench-remote", "--capacity", str(CAPACITY)],
                             env=cli_env, cwd=self.workdir, check=True, capture_output=True, text=True)
        self.worker_token = out.stdout.strip().splitlines()[-1]
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        server_env = dict(
            self.service_env,
            REELHOUSE__WORKERS__EMBEDDED="false",
            REELHOUSE__RATE_LIMIT__ENABLED="false",
            REELHOUSE__AUTH__UNVERIFIED_CAN_UPLOAD="true",
            REELHOUSE__AUTH__ACCESS_TOKEN_TTL_SECS="7200",
            REELHOUSE__UPLOADS__MULTIPART_THRESHOLD_BYTES=str(1 << 40),
        )
        self.server = Proc("server", [str(self.binary), "serve", "--bind", f"127.0.0.1:{port}",
                                      "--data-dir", str(self.workdir / "server-data")], server_env, self.workdir)
        self.api = Api(self.url)
        for _ in range(600):
            if self.api.healthy():
                break
            if not self.server.alive():
                raise SystemExit(f"the server died:\n{self.server.tail()}")
            time.sleep(0.1)
        else:
            raise SystemExit(f"the server did not answer /health:\n{self.server.tail()}")
        self.api.login()
        log(f"server {self.url} (pid {self.server.pid}), no embedded workers")

    # ---- workers

    def start_local(self, name):
        cmd = [str(self.binary), "worker", "--data-dir", str(self.workdir / f"{name}-data")]
        return Proc(name, cmd, self.service_env, self.workdir)

    def start_remote(self, name):
        env = dict(self.base_env, REELHOUSE_WORKER_TOKEN=self.worker_token,
                   REELHOUSE__WORKERS__CONCURRENCY=str(CAPACITY), REELHOUSE__SERVER__SHUTDOWN_TIMEOUT_SECS="10")
        cmd = [str(self.binary), "worker", "--server", self.url, "--data-dir", str(self.workdir / f"{name}-data")]
        proc = Proc(name, cmd, env, self.workdir)
        # Only the token: no database, Redis or storage settings, and no secret of the server's.
        environ = environment_of(proc.pid)
        bad = [kv.split("=", 1)[0] for kv in environ
               if SECRET_ENV.match(kv.split("=", 1)[0]) and not kv.startswith("REELHOUSE_WORKER_TOKEN=")
               and not kv.startswith("REELHOUSE__WORKERS__CONCURRENCY=")
               and not kv.startswith("REELHOUSE__SERVER__SHUTDOWN_TIMEOUT_SECS=")
               and not kv.startswith("REELHOUSE__TELEMETRY__")]
        leaked = [s for s in self.secrets if any(s in kv for kv in environ)]
        if bad or leaked:
            proc.stop()
            raise SystemExit(f"the remote worker's environment names {bad} / holds a server secret")
        return proc

    def wait_ready(self, procs):
        """Until each worker says it is up; returns {lease owner: kind}."""
        owners = {}
        deadline = time.monotonic() + 120
        for kind, proc in procs:
            needle = "worker registered" if kind == "local" else "connected to the server"
            while True:
                line = next((l for l in proc.log_text().splitlines() if needle in l), None)
                if line:
                    worker = UUID.search(line.split(needle, 1)[1]) or UUID.search(line)
                    owner = worker.group(0) if worker else None
                    if owner:
                        owners[owner if kind == "local" else f"remote:{owner}"] = kind
                    break
                if not proc.alive():
                    raise SystemExit(f"{proc.name} died:\n{proc.tail()}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"{proc.name} did not come up:\n{proc.tail()}")
                time.sleep(0.1)
        time.sleep(1.0)  # one poll interval: every scheduler has looked at the (empty) queue
        return owners

    # ---- one run

    def upload_sources(self, config, run):
        tickets = []
        for i in range(N):
            vid = self.api.gql("mutation($i: CreateVideoInput!) { createVideo(input: $i) { id } }",
                               {"i": {"title": f"bench {config}{run} #{i}"}})["createVideo"]["id"]
            t = self.api.gql(
                "mutation($i: CreateUploadInput!) { createUpload(input: $i) { id method url headers { name value } } }",
                {"i": {"videoId": vid, "filename": "clip.mp4", "contentType": "video/mp4",
                       "size": len(self.clip_bytes)}})["createUpload"]
            if t["method"] != "PUT":
                raise SystemExit(f"expected a single-PUT ticket, got {t['method']}")
            put(t["url"], {h["name"]: h["value"] for h in t["headers"]}, self.clip_bytes)
            tickets.append((vid, t["id"]))
        return tickets

    def run(self, config, run):
        local_n, remote_n = WORKERS[config]
        procs = []
        for i in range(local_n):
            procs.append(("local", self.start_local(f"{config}{run}-local{i}")))
        for i in range(remote_n):
            procs.append(("remote", self.start_remote(f"{config}{run}-remote{i}")))
        self.procs = [p for _, p in procs]
        try:
            owners = self.wait_ready(procs)
            tickets = self.upload_sources(config, run)
            videos = {vid for vid, _ in tickets}
            load_before = os.getloadavg()
            cpu0 = {p.name: tree_cpu(p.pid) for _, p in procs}
            server0 = cpu_seconds(self.server.pid)
            s3_0 = cpu_seconds(self.services.s3_pid) if self.services.s3_pid else None
            t0 = time.monotonic()
            for _, upload_id in tickets:
                video = self.api.gql("mutation($id: ID!) { completeUpload(id: $id) { status } }",
                                     {"id": upload_id})["completeUpload"]
                if video["status"] != "PROCESSING":
                    raise SystemExit(f"completeUpload left the video {video['status']}")
            t_enqueued = time.monotonic() - t0
            jobs = {}
            while True:
                nodes = self.api.gql("{ jobs(first: 100) { nodes { id videoId kind status } } }")["jobs"]["nodes"]
                jobs = {j["id"]: j for j in nodes if j["videoId"] in videos and j["kind"] == "TRANSCODE"}
                if len(jobs) == N and all(j["status"] not in ("QUEUED", "RUNNING") for j in jobs.values()):
                    break
                for _, p in procs:
                    if not p.alive():
                        raise SystemExit(f"{p.name} died:\n{p.tail()}")
                if time.monotonic() - t0 > RUN_TIMEOUT:
                    raise SystemExit(f"run {config}{run} did not finish in {RUN_TIMEOUT} s")
                time.sleep(0.25)
            wall = time.monotonic() - t0
            cpu1 = {p.name: tree_cpu(p.pid) for _, p in procs}
            server1 = cpu_seconds(self.server.pid)
            s3_1 = cpu_seconds(self.services.s3_pid) if self.services.s3_pid else None
            load_after = os.getloadavg()
        finally:
            for _, p in procs:
                p.stop()
            self.procs = []
        details = []
        for job_id in jobs:
            j = self.api.gql(
                "query($id: ID!) { job(id: $id) { id status attempts createdAt finishedAt log { at message } } }",
                {"id": job_id})["job"]
            details.append(j)
        ready = 0
        for vid in videos:
            v = self.api.gql("query($id: ID!) { video(id: $id) { status } }", {"id": vid})["video"]
            ready += v["status"] == "READY"
        return summarize_run(config, run, details, owners, ready, wall, t_enqueued,
                             worker_cpu=sum(cpu1[k] - cpu0[k] for k in cpu0),
                             server_cpu=server1 - server0,
                             s3_cpu=(s3_1 - s3_0) if s3_0 is not None and s3_1 is not None else None,
                             load=(load_before[0], load_after[0]))

    def cleanup(self):
        for p in self.procs:
            p.stop()
        if self.server:
            self.server.stop()
        if not KEEP:
            if self.db_created:
                try:
                    psql(self.services.env["REELHOUSE_TEST_PG_URL"], f"DROP DATABASE IF EXISTS {self.tag} WITH (FORCE)")
                except subprocess.CalledProcessError:
                    log(f"could not drop the database {self.tag}")
            if self.services.s3_root:
                bucket = self.services.env.get("REELHOUSE_TEST_S3_BUCKET", "")
                shutil.rmtree(self.services.s3_root / bucket / self.prefix.rstrip("/"), ignore_errors=True)
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            log(f"kept {self.workdir} and the database {self.tag}")


def summarize_run(config, run, details, owners, ready, wall, t_enqueued, worker_cpu, server_cpu, s3_cpu, load):
    jobs = []
    for j in details:
        lines = [(parse_at(l["at"]), l["message"]) for l in j["log"]]
        leases = [(at, m) for at, m in lines if " leased by " in m]
        lease_at, lease_msg = leases[-1] if leases else (None, "")
        owner = lease_msg.split(" leased by ", 1)[1].strip() if lease_msg else ""
        finished = parse_at(j["finishedAt"]) if j["finishedAt"] else None
        # Stage boundaries: the last run's lines only.
        marks = {"assign": lease_at}
        for name, prefix in STAGES[1:]:
            hit = next((at for at, m in lines if lease_at is not None and at >= lease_at and m.startswith(prefix)), None)
            marks[name] = hit
        bounds = [marks[name] for name, _ in STAGES] + [finished]
        stages = {}
        for i, (name, _) in enumerate(STAGES):
            a, b = bounds[i], bounds[i + 1]
            stages[name] = (b - a) if a is not None and b is not None else None
        moving = [stages[name] for name in TRANSFER]
        stages["transfer"] = sum(moving) if None not in moving else None
        jobs.append({
            "id": j["id"], "status": j["status"], "attempts": j["attempts"],
            "created": parse_at(j["createdAt"]), "leased": lease_at, "finished": finished,
            "duration_s": (finished - lease_at) if finished and lease_at else None,
            "queued_s": (lease_at - parse_at(j["createdAt"])) if lease_at else None,
            "worker": owners.get(owner, "remote" if owner.startswith("remote:") else "local?"),
            "stages_s": stages,
        })
    ok = [j for j in jobs if j["status"] == "SUCCEEDED"]
    created = min(j["created"] for j in jobs)
    finished = [j["finished"] for j in jobs if j["finished"]]
    makespan = max(finished) - created if finished else None
    durations = [j["duration_s"] for j in ok if j["duration_s"] is not None]
    result = {
        "config": config, "run": run, "encodes": len(jobs), "succeeded": len(ok), "ready": ready,
        "retried": sum(j["attempts"] > 1 for j in jobs),
        "makespan_s": makespan,
        "wall_client_s": wall, "enqueue_s": t_enqueued,
        "per_encode_s": makespan / len(jobs) if makespan else None,
        "throughput_per_min": 60 * len(ok) / makespan if makespan else None,
        "job_sum_s": sum(durations), "job_median_s": statistics.median(durations) if durations else None,
        "stage_median_s": {
            name: statistics.median([j["stages_s"][name] for j in ok if j["stages_s"][name] is not None] or [0])
            for name in [n for n, _ in STAGES] + ["transfer"]
        },
        "by_worker": {k: sum(1 for j in ok if j["worker"] == k) for k in sorted({j["worker"] for j in ok})},
        "worker_cpu_s": worker_cpu, "server_cpu_s": server_cpu, "s3_cpu_s": s3_cpu,
        "loadavg_1m": load,
        "jobs": jobs,
    }
    log(f"run {config}{run}: {len(ok)}/{len(jobs)} succeeded ({ready} READY), makespan {makespan:.2f} s, "
        f"jobs sum {result['job_sum_s']:.2f} s (median {result['job_median_s']:.2f} s), "
        f"worker CPU {worker_cpu:.1f} s, server CPU {server_cpu:.1f} s, by worker {result['by_worker']}, "
        f"load {load[0]:.2f}->{load[1]:.2f}")
    return result


# ------------------------------------------------------------- reporting


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [v for v in values if v is not None]
    return (min(values), max(values)) if values else (None, None)


def fmt(v, digits=2, unit=""):
    return "n/a" if v is None else f"{v:.{digits}f}{unit}"


def pct(v):
    return "n/a" if v is None else f"{v * 100:+.1f} %"


def report(runs, binary, clip, started, finished):
    by = {c: [r for r in runs if r["config"] == c] for c in CONFIGS}
    summary = {}
    for c, rs in by.items():
        if not rs:
            continue
        summary[c] = {
            key: {"median": med([r[key] for r in rs]), "min": spread([r[key] for r in rs])[0],
                  "max": spread([r[key] for r in rs])[1]}
            for key in ("makespan_s", "per_encode_s", "throughput_per_min", "job_sum_s", "job_median_s",
                        "worker_cpu_s", "server_cpu_s", "s3_cpu_s")
        }
        summary[c]["stage_median_s"] = {
            name: med([r["stage_median_s"][name] for r in rs]) for name in [n for n, _ in STAGES] + ["transfer"]
        }
    # Per round: each config against the A of its own round.
    ratios = {}
    rounds = sorted({r["run"] for r in runs})
    for c in CONFIGS:
        if c == "A" or "A" not in by:
            continue
        rows = []
        for n in rounds:
            a = next((r for r in by["A"] if r["run"] == n), None)
            x = next((r for r in by.get(c, []) if r["run"] == n), None)
            if not a or not x:
                continue
            rows.append({
                key: (x[key] - a[key]) / a[key] if a[key] and x[key] is not None else None
                for key in ("makespan_s", "job_sum_s", "job_median_s", "worker_cpu_s", "server_cpu_s")
            } | {"throughput_ratio": (x["throughput_per_min"] / a["throughput_per_min"])
                 if a["throughput_per_min"] and x["throughput_per_min"] else None,
                 # The transfer stages' extra time, as a share of the baseline's median job.
                 "transfer_share": (x["stage_median_s"]["transfer"] - a["stage_median_s"]["transfer"])
                 / a["job_median_s"] if a["job_median_s"] else None})
        ratios[c] = {
            key: {"median": med([r[key] for r in rows]), "min": spread([r[key] for r in rows])[0],
                  "max": spread([r[key] for r in rows])[1], "per_round": [r[key] for r in rows]}
            for key in ("makespan_s", "job_sum_s", "job_median_s", "worker_cpu_s", "server_cpu_s", "throughput_ratio",
                        "transfer_share")
        }
    result = {
        "encodes_per_run": N, "capacity": CAPACITY, "rounds": RUNS, "configs": CONFIGS,
        "clip": {"path": str(clip), "seconds": SECONDS, "width": WIDTH, "height": HEIGHT,
                 "bytes": clip.stat().st_size},
        "binary": str(binary), "started": started, "finished": finished,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "cpu_model": cpu_model()},
        "summary": summary, "vs_baseline": ratios, "runs": runs,
    }
    md = render_markdown(result)
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "remote.md").write_text(md)
    (DOCS / "remote.json").write_text(json.dumps(result, indent=2) + "\n")
    print(md)
    log(f"wrote {DOCS / 'remote.md'} and {DOCS / 'remote.json'}")


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def render_markdown(r):
    s, v = r["summary"], r["vs_baseline"]
    out = [
        f"# Remote workers: channel overhead ({r['encodes_per_run']} encodes of a {r['clip']['seconds']} s "
        f"{r['clip']['height']}p clip per run, capacity {r['capacity']} per worker, {r['rounds']} round(s))",
        "",
        f"{r['started']} .. {r['finished']}; {r['machine']['cpus']} CPUs ({r['machine']['cpu_model']}); "
        f"`{Path(r['binary']).name}` at {r['binary']}. PostgreSQL + S3 (s3s-fs), serve without embedded "
        "workers; medians over the rounds, [min..max] in brackets; ratios are per round against that round's A.",
        "",
        "| run | makespan s | per encode s | encodes/min | sum of jobs s | median job s | worker CPU s | server CPU s | s3s-fs CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in r["configs"]:
        if c not in s:
            continue
        x = s[c]

        def cell(key, digits=2):
            m = x[key]
            if m["median"] is None:
                return "n/a"
            if r["rounds"] > 1:
                return f"{m['median']:.{digits}f} [{m['min']:.{digits}f}..{m['max']:.{digits}f}]"
            return f"{m['median']:.{digits}f}"

        out.append(f"| {LABEL[c]} | {cell('makespan_s')} | {cell('per_encode_s')} | {cell('throughput_per_min')} | "
                   f"{cell('job_sum_s')} | {cell('job_median_s')} | {cell('worker_cpu_s', 1)} | "
                   f"{cell('server_cpu_s', 1)} | {cell('s3_cpu_s', 1)} |")
    out += ["", "| against A (per round) | makespan | sum of jobs | median job | transfer stages, share of A's job "
                "| worker CPU | server CPU | throughput |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c, x in v.items():
        def rc(key):
            m = x[key]
            if m["median"] is None:
                return "n/a"
            if key == "throughput_ratio":
                body = f"{m['median']:.3f}x"
                return body + (f" [{m['min']:.3f}..{m['max']:.3f}]" if r["rounds"] > 1 else "")
            body = pct(m["median"])
            return body + (f" [{pct(m['min'])}..{pct(m['max'])}]" if r["rounds"] > 1 else "")

        out.append(f"| {LABEL[c]} | {rc('makespan_s')} | {rc('job_sum_s')} | {rc('job_median_s')} | "
                   f"{rc('transfer_share')} | {rc('worker_cpu_s')} | {rc('server_cpu_s')} | {rc('throughput_ratio')} |")
    out += ["", "Where a job's time goes (median seconds per job, from its log lines' timestamps):", "",
            "| run | " + " | ".join(name for name, _ in STAGES) + " | transfer (" + " + ".join(TRANSFER) + ") |",
            "| --- | " + " | ".join("---" for _ in STAGES) + " | --- |"]
    for c in r["configs"]:
        if c in s:
            out.append(f"| {LABEL[c]} | " + " | ".join(fmt(s[c]["stage_median_s"][n]) for n, _ in STAGES)
                       + f" | {fmt(s[c]['stage_median_s']['transfer'])} |")
    out += ["", "Runs in order:", "",
            "| run | makespan s | sum of jobs s | jobs by worker | succeeded / READY | retried | load 1m before..after |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for run in r["runs"]:
        out.append(f"| {run['config']}{run['run']} | {fmt(run['makespan_s'])} | {fmt(run['job_sum_s'])} | "
                   f"{', '.join(f'{k} {n}' for k, n in run['by_worker'].items())} | "
                   f"{run['succeeded']}/{run['encodes']} / {run['ready']} | {run['retried']} | "
                   f"{run['loadavg_1m'][0]:.2f}..{run['loadavg_1m'][1]:.2f} |")
    b = v.get("B")
    if b and b["job_sum_s"]["median"] is not None:
        out += ["", verdict(b, r["rounds"])]
    return "\n".join(out) + "\n"


def verdict(b, rounds):
    """The issue's target (the channel costs <= 2 % of encode time), read two ways: the
    wall time of whole jobs (B against A), and the stages that differ between the two
    kinds of worker measured directly. When the rounds' wall-time ratios spread wider
    than the target, that figure cannot decide it and the text says so."""
    target = 0.02
    wall, lo, hi = (b["job_sum_s"][k] for k in ("median", "min", "max"))
    direct = b["transfer_share"]["median"]
    text = (f"Channel overhead, wall time (B against A, sum of job durations): {pct(wall)}"
            + (f" [{pct(lo)}..{pct(hi)}]" if rounds > 1 else "")
            + f", makespan {pct(b['makespan_s']['median'])}.")
    if rounds > 1 and hi - lo > 2 * target:
        text += (f" The rounds spread over {(hi - lo) * 100:.1f} points, more than twice the 2 % target:"
                 " at this noise the wall time cannot decide it.")
    if direct is not None:
        text += (f" Measured directly (the remote worker's assignment, source download + probe, output upload"
                 f" and result, minus the local worker's, per job, as a share of A's median job): **{pct(direct)}**"
                 + (f" [{pct(b['transfer_share']['min'])}..{pct(b['transfer_share']['max'])}]" if rounds > 1 else "")
                 + "; target <= +2.0 %: "
                 + ("**met**." if direct <= target else f"**missed by {(direct - target) * 100:.1f} points**."))
    return text


def main():
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    binary = build_binary()
    clip = ensure_clip()
    services = Services()
    bench = Bench(binary, clip, services)
    runs = []
    interrupted = None
    try:
        bench.setup()
        for n in range(1, RUNS + 1):
            for config in CONFIGS:
                log(f"round {n}/{RUNS}: {LABEL[config]}, {N} encodes")
                runs.append(bench.run(config, n))
    except (KeyboardInterrupt, SystemExit, Exception) as err:  # report what was measured, then fail
        interrupted = err
        log(f"stopped early: {err!r}")
    finally:
        bench.cleanup()
        services.stop()
    if runs:
        finished = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        report(runs, binary, clip, started, finished)
    if interrupted is not None:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
