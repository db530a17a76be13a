#!/usr/bin/env python3
"""Checks of deploy/ that no schema validator covers (run by scripts/test-deploy.sh).

Usage: check.py RENDERED_DIR
  RENDERED_DIR holds one `kubectl kustomize` output per kustomization
  (base.yaml, monitoring.yaml, keda.yaml); the Kubernetes schemas themselves are
  checked by kubernetes-validate beforehand.

- Every metric name used by the Grafana dashboard, the PrometheusRule alerts and
  the KEDA trigger is one the server emits: a `"reelhouse_..."` literal in
  server/src (a Rust test keeps those equal to telemetry::METRICS, which all have
  HELP), a histogram's `_bucket`/`_sum`/`_count` series, or a standard
  `process_*` metric of metrics-process.
- Every PromQL expression parses (promql-parser).
- The dashboard is valid JSON with unique panel ids and a target on every panel.
- The custom resources (ServiceMonitor, PrometheusRule, ScaledObject), for which
  no schema is at hand, have the structure their operators require, and point at
  ports and Deployments that exist.
- Every pod runs non-root with seccomp RuntimeDefault, a read-only root file
  system, no privilege escalation, all capabilities dropped, resource requests and
  limits, and probes on declared ports; NetworkPolicies and PDBs select pods that exist.
"""

import json
import pathlib
import re
import sys

import promql_parser
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROCESS_METRICS = {
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
}
# Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = {"up"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")

errors = []


def fail(message):
    errors.append(message)


def emitted_metrics():
    names = set()
    for path in (ROOT / "server" / "src").rglob("*.rs"):
        names.update(re.findall(r'"(reelhouse_[a-z0-9_]+)"', path.read_text()))
    if "reelhouse_http_requests_total" not in names:
        sys.exit("check.py: no metric names found in server/src")
    return names


EMITTED = emitted_metrics()


def known(name):
    if name in EMITTED or name in PROCESS_METRICS or name in PROMETHEUS_SERIES:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in EMITTED:
            return True
    return False


def selectors(node):
    """Metric names of every vector selector in a parsed PromQL expression."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        yield node.name
        return
    for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            yield from selectors(child)
    for child in getattr(node, "args", None) or []:
        yield from selectors(child)


def check_promql(where, expr):
    # Grafana's variables, as Grafana substitutes them.
    text = expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("${job}", ".*")
    try:
        parsed = promql_parser.parse(text)
    except ValueError as err:
        fail(f"{where}: PromQL does not parse: {err}: {expr}")
        return
    names = [n for n in selectors(parsed) if n]
    if not names:
        fail(f"{where}: no metric in {expr}")
    for name in names:
        if not known(name):
            fail(f"{where}: metric `{name}` is not emitted by the server: {expr}")


def check_dashboard():
    path = ROOT / "deploy" / "grafana" / "reelhouse.json"
    try:
        dashboard = json.loads(path.read_text())
    except ValueError as err:
        fail(f"{path}: not JSON: {err}")
        return
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dashboard:
            fail(f"{path}: no `{key}`")
    ids = set()
    queries = 0
    for panel in dashboard.get("panels", []):
        pid = panel.get("id")
        if pid in ids:
            fail(f"{path}: panel id {pid} twice")
        ids.add(pid)
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            fail(f"{path}: panel `{panel.get('title')}` has no query")
        for target in targets:
            queries += 1
            check_promql(f"grafana panel `{panel.get('title')}`", target.get("expr", ""))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            match = re.search(r"label_values\(([a-z_0-9]+)", query.get("query", ""))
            if match and not known(match.group(1)):
                fail(f"grafana variable `{variable.get('name')}`: unknown metric {match.group(1)}")
    # The subjects: API latency, errors, subscribers, queue depth, encode fps, dependency health.
    text = json.dumps(dashboard)
    for needle in (
        "reelhouse_http_request_duration_seconds_bucket",
        'status=~\\"5..\\"',
        "reelhouse_subscribers",
        "reelhouse_jobs",
        "reelhouse_encode_fps",
        "reelhouse_dependency_up",
    ):
        if needle not in text:
            fail(f"{path}: nothing shows {needle}")
    print(f"check.py: dashboard: {len(ids)} panels, {queries} queries checked")


def load(rendered, name):
    docs = [d for d in yaml.safe_load_all((rendered / f"{name}.yaml").read_text()) if d]
    if not docs:
        fail(f"{name}: kustomize rendered nothing")
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_workloads(name, docs):
    deployments = by_kind(docs, "Deployment")
    if {d["metadata"]["name"] for d in deployments} != {"reelhouse-api", "reelhouse-worker"}:
        fail(f"{name}: expected the reelhouse-api and reelhouse-worker Deployments")
    pod_labels = []
    for deployment in deployments:
        dname = deployment["metadata"]["name"]
        spec = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pod_labels.append(labels)
        if not labels_match(deployment["spec"]["selector"]["matchLabels"], labels):
            fail(f"{name}/{dname}: the selector does not match the pod labels")
        pod_sc = spec.get("securityContext", {})
        if pod_sc.get("runAsNonRoot") is not True:
            fail(f"{name}/{dname}: pod securityContext.runAsNonRoot is not true")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail(f"{name}/{dname}: pod seccompProfile is not RuntimeDefault")
        for container in spec.get("initContainers", []) + spec["containers"]:
            cname = f"{name}/{dname}/{container['name']}"
            sc = container.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(f"{cname}: root file system is not read-only")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{cname}: allowPrivilegeEscalation is not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                fail(f"{cname}: capabilities are not all dropped")
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(part, {}):
                        fail(f"{cname}: no {part}.{resource}")
        for container in spec["containers"]:
            cname = f"{name}/{dname}/{container['name']}"
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if port is None:
                    fail(f"{cname}: no HTTP {probe}")
                elif isinstance(port, str) and port not in ports:
                    fail(f"{cname}: {probe} uses undeclared port {port}")
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for item in by_kind(docs, kind):
            selector = item["spec"].get("selector", item["spec"].get("podSelector", {})).get("matchLabels", {})
            if not any(labels_match(selector, labels) for labels in pod_labels):
                fail(f"{name}: {kind} {item['metadata']['name']} selects no pod")
    services = by_kind(docs, "Service")
    for service in services:
        if not any(labels_match(service["spec"]["selector"], labels) for labels in pod_labels):
            fail(f"{name}: Service {service['metadata']['name']} selects no pod")
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind(docs, "HorizontalPodAutoscaler")}
    scaled = {s["spec"]["scaleTargetRef"]["name"] for s in by_kind(docs, "ScaledObject")}
    if "reelhouse-api" not in hpas:
        fail(f"{name}: no HPA for the API")
    if "reelhouse-worker" not in hpas | scaled or ("reelhouse-worker" in hpas and "reelhouse-worker" in scaled):
        fail(f"{name}: the workers need exactly one autoscaler (HPA or ScaledObject)")
    return services


def check_monitoring(name, docs, services):
    monitors = by_kind(docs, "ServiceMonitor")
    rules = by_kind(docs, "PrometheusRule")
    if len(monitors) != 1 or len(rules) != 1:
        fail(f"{name}: expected one ServiceMonitor and one PrometheusRule")
        return
    monitor = monitors[0]
    selected = [s for s in services if labels_match(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
    ports = {p.get("name") for s in selected for p in s["spec"]["ports"]}
    for endpoint in monitor["spec"].get("endpoints", []):
        if endpoint.get("port") not in ports:
            fail(f"{name}: ServiceMonitor endpoint port {endpoint.get('port')} is on no selected Service")
        if not DURATION.match(str(endpoint.get("interval", "30s"))):
            fail(f"{name}: ServiceMonitor interval {endpoint.get('interval')}")
    alerts = set()
    for group in rules[0]["spec"].get("groups", []):
        if not group.get("name"):
            fail(f"{name}: a rule group without a name")
        for rule in group.get("rules", []):
            alert = rule.get("alert")
            if not alert or "expr" not in rule:
                fail(f"{name}: rule without alert or expr in {group.get('name')}")
                continue
            alerts.add(alert)
            if "for" in rule and not DURATION.match(str(rule["for"])):
                fail(f"{name}: {alert}: bad `for` {rule['for']}")
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                fail(f"{name}: {alert}: severity label")
            if not rule.get("annotations", {}).get("summary"):
                fail(f"{name}: {alert}: no summary")
            check_promql(f"alert {alert}", rule["expr"])
    wanted = {
        "ReelhouseApiErrorRate",
        "ReelhouseApiLatencyP99",
        "ReelhouseQueueBacklogAge",
        "ReelhouseDeadJobs",
        "ReelhouseDependencyDown",
        "ReelhouseWorkerHeartbeatsMissing",
    }
    if not wanted <= alerts:
        fail(f"{name}: missing alerts {sorted(wanted - alerts)}")
    print(f"check.py: {name}: {len(alerts)} alerts checked")


def check_keda(docs):
    objects = by_kind(docs, "ScaledObject")
    if len(objects) != 1:
        fail("keda: expected one ScaledObject")
        return
    spec = objects[0]["spec"]
    deployments = {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}
    if spec.get("scaleTargetRef", {}).get("name") not in deployments:
        fail("keda: ScaledObject targets no Deployment")
    for trigger in spec.get("triggers", []):
        if trigger.get("type") != "prometheus":
            continue
        metadata = trigger.get("metadata", {})
        for key in ("serverAddress", "query", "threshold"):
            if key not in metadata:
                fail(f"keda: prometheus trigger without {key}")
        check_promql("keda trigger", metadata.get("query", ""))


def container_envs(rendered):
    """{name: {VAR: value}} of every container in the base and of compose's api and
    worker: what each process of the deployment reads as its settings."""
    docs = load(rendered, "base")
    config = {}
    for kind in ("ConfigMap", "Secret"):
        for item in by_kind(docs, kind):
            config[(kind, item["metadata"]["name"])] = {**item.get("data", {}), **item.get("stringData", {})}
    envs = {}
    for deployment in by_kind(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            env = {}
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    env.update(config[("ConfigMap", source["configMapRef"]["name"])])
                if "secretRef" in source:
                    env.update(config[("Secret", source["secretRef"]["name"])])
            for item in container.get("env", []):
                env[item["name"]] = item["value"]
            envs[f"k8s-{deployment['metadata']['name']}-{container['name']}"] = (env, container.get("args", []))
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    for name in ("migrate", "api", "worker"):
        service = compose["services"][name]
        env = {
            key: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
            for key, value in service.get("environment", {}).items()
        }
        envs[f"compose-{name}"] = (env, service.get("command", []))
    return envs


def write_envs(rendered, out):
    """One NAME.env (NUL-separated VAR=value) and NAME.cmd per process, for
    `reelhouse config` to check that every variable is a setting it knows."""
    out.mkdir(parents=True, exist_ok=True)
    for name, (env, args) in container_envs(rendered).items():
        (out / f"{name}.env").write_text("".join(f"{k}={v}\0" for k, v in sorted(env.items())))
        (out / f"{name}.cmd").write_text(" ".join(args))
    print(f"check.py: wrote the settings of {len(list(out.glob('*.env')))} processes")


def main():
    if sys.argv[1] == "--envs":
        write_envs(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]))
        return
    rendered = pathlib.Path(sys.argv[1])
    check_dashboard()
    base = load(rendered, "base")
    check_workloads("base", base)
    for overlay in ("monitoring", "keda"):
        docs = load(rendered, overlay)
        services = check_workloads(overlay, docs)
        check_monitoring(overlay, docs, services)
    check_keda(load(rendered, "keda"))
    if errors:
        for message in errors:
            print(f"check.py: FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    print("check.py: all deploy checks passed")


if __name__ == "__main__":
    main()
