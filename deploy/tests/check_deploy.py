"""Checks of deploy/: the Helm chart rendered by the real helm and validated against the Kubernetes
schemas, Compose/Prometheus/Grafana files parsed and checked with promtool, the Dockerfiles' pins,
and every metric the alerts, dashboard and autoscaler use against a live server's /metrics.

Run by tests/it/deploy.rs through the deployment venv (scripts/install-deploy-tools.sh):
    check_deploy.py chart | configs | selftest | metrics --exposition FILE
Exit status 1 with every problem listed when anything is wrong.
"""

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "altimage"
TOOLS = ROOT / ".cache" / "deploy-tools"
HELM = os.environ.get("ALTIMAGE_HELM", str(TOOLS / "helm"))
PROMTOOL = os.environ.get("ALTIMAGE_PROMTOOL", str(TOOLS / "promtool"))
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas bundled.
K8S_VERSIONS = ["1.25.0", "1.37.0"]
# Kinds whose schemas are CRDs (prometheus-operator), checked structurally below instead.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Metrics not exported by altimage that rules may use: Prometheus' own scrape health.
FOREIGN_METRICS = {"up"}
# Longest model load the startup probe must allow before a restart, in seconds.
MIN_STARTUP_SECONDS = 300
# The server's hard stop after the drain (src/serve.rs) that the grace period must also cover.
SERVER_HARD_STOP_SECONDS = 2

EXTERNAL_DATABASE_SECRET = "altimage-database"
EXTERNAL_SECRET = "altimage-secrets"

# Each variant: extra values files, --set flags, what the rendering must contain.
VARIANTS = {
    "default": ([], [], dict(gpu=False, hpa=None, service_monitor=False, rule=False, model_volume=True)),
    "gpu": (["values-gpu.yaml"], [], dict(gpu=True, hpa="pods", service_monitor=True, rule=True, model_volume=True)),
    "cpu-autoscaled": ([], ["autoscaling.enabled=true"], dict(gpu=False, hpa="cpu", service_monitor=False, rule=False, model_volume=True)),
    "own-secrets-baked-model": (
        [],
        [
            f"secrets.existingSecret={EXTERNAL_SECRET}",
            "database.url=postgres://altimage:pw@db:5432/altimage",
            "model.volume=null",
        ],
        dict(gpu=False, hpa=None, service_monitor=False, rule=False, model_volume=False),
    ),
}


def run(*command, check=True):
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def helm_args(values_files, sets):
    args = []
    for f in values_files:
        args += ["-f", CHART / f]
    for s in sets:
        args += ["--set", s]
    return args


def render(values_files=(), sets=()):
    out = run(HELM, "template", "altimage", CHART, *helm_args(values_files, sets)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


# ---------------------------------------------------------------- chart


def by_kind(objects, kind):
    return [o for o in objects if o.get("kind") == kind]


def subset(small, big):
    return bool(small) and all(big.get(k) == v for k, v in small.items())


def check_objects(objects, expect):
    """Everything a working altimage release needs, as a list of problems (empty when fine)."""
    problems = []
    deployments = by_kind(objects, "Deployment")
    if len(deployments) != 1:
        return [f"expected one Deployment, got {len(deployments)}"]
    deployment = deployments[0]
    pod_template = deployment["spec"]["template"]
    pod_labels = pod_template["metadata"].get("labels", {})
    pod = pod_template["spec"]
    if not subset(deployment["spec"]["selector"].get("matchLabels", {}), pod_labels):
        problems.append("Deployment selector does not match its pod labels")
    containers = pod.get("containers", [])
    if len(containers) != 1:
        return problems + [f"expected one container, got {len(containers)}"]
    container = containers[0]
    env = {e["name"]: e for e in container.get("env", [])}

    def env_value(name):
        return env.get(name, {}).get("value")

    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for where, table, key in [("requests", requests, "cpu"), ("requests", requests, "memory"), ("limits", limits, "memory")]:
        if key not in table:
            problems.append(f"container resources.{where}.{key} missing")

    gpus_limit, gpus_request = limits.get("nvidia.com/gpu"), requests.get("nvidia.com/gpu")
    device = env_value("ALTIMAGE_DEVICE") or ""
    if expect["gpu"]:
        if not gpus_limit or int(gpus_limit) < 1:
            problems.append("GPU values: resources.limits nvidia.com/gpu missing")
        if gpus_request != gpus_limit:
            problems.append("GPU values: nvidia.com/gpu requests must equal limits")
        if not device.startswith("cuda"):
            problems.append(f"GPU values: ALTIMAGE_DEVICE is {device!r}, not cuda")
    else:
        if gpus_limit or gpus_request:
            problems.append("CPU values request nvidia.com/gpu")
        if device != "cpu":
            problems.append(f"CPU values: ALTIMAGE_DEVICE is {device!r}")

    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
    if "http" not in ports:
        problems.append("container port named http missing")
    elif env_value("ALTIMAGE_LISTEN") != f"0.0.0.0:{ports['http']}":
        problems.append(f"ALTIMAGE_LISTEN is {env_value('ALTIMAGE_LISTEN')!r}, not 0.0.0.0:{ports['http']}")

    def probe_path(name):
        probe = container.get(name) or {}
        get = probe.get("httpGet") or {}
        return get.get("path"), get.get("port")

    for name, path in [("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")]:
        got = probe_path(name)
        if got != (path, "http"):
            problems.append(f"{name} must GET {path} on port http, got {got}")
    startup = container.get("startupProbe")
    if not startup or probe_path("startupProbe")[0] not in ("/health/ready", "/health/live"):
        problems.append("startupProbe on a health route missing")
    else:
        allowed = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        if allowed < MIN_STARTUP_SECONDS:
            problems.append(f"startupProbe allows {allowed} s for model loading, less than {MIN_STARTUP_SECONDS}")

    pre_stop = (container.get("lifecycle") or {}).get("preStop")
    pre_stop_seconds = 0
    if not pre_stop:
        problems.append("lifecycle.preStop missing")
    elif "exec" in pre_stop:
        command = pre_stop["exec"].get("command", [])
        if len(command) == 2 and command[0] == "sleep" and command[1].isdigit():
            pre_stop_seconds = int(command[1])
        else:
            problems.append(f"preStop exec is not a plain sleep: {command}")
    elif "sleep" in pre_stop:
        pre_stop_seconds = int(pre_stop["sleep"]["seconds"])
    shutdown = env_value("ALTIMAGE_SHUTDOWN_TIMEOUT_SECS")
    grace = pod.get("terminationGracePeriodSeconds")
    if shutdown is None or not shutdown.isdigit():
        problems.append("ALTIMAGE_SHUTDOWN_TIMEOUT_SECS missing")
    elif grace is None:
        problems.append("terminationGracePeriodSeconds missing")
    elif grace < pre_stop_seconds + int(shutdown) + SERVER_HARD_STOP_SECONDS:
        problems.append(
            f"terminationGracePeriodSeconds {grace} < preStop {pre_stop_seconds} + drain {shutdown} + {SERVER_HARD_STOP_SECONDS}"
        )

    pod_security = pod.get("securityContext") or {}
    container_security = container.get("securityContext") or {}
    if pod_security.get("runAsNonRoot") is not True or pod_security.get("runAsUser", 0) == 0:
        problems.append("pod securityContext must run as a non-root uid")
    if container_security.get("allowPrivilegeEscalation") is not False:
        problems.append("container securityContext.allowPrivilegeEscalation must be false")

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    for mount in mounts.values():
        if mount["name"] not in volumes:
            problems.append(f"volumeMount {mount['name']} has no volume")
    model_dir = env_value("ALTIMAGE_MODEL_DIR")
    if not model_dir:
        problems.append("ALTIMAGE_MODEL_DIR missing")
    elif expect["model_volume"] and model_dir not in mounts:
        problems.append(f"no model volume mounted at {model_dir}")
    elif not expect["model_volume"] and model_dir in mounts:
        problems.append("model volume mounted although the model is baked into the image")
    if container_security.get("readOnlyRootFilesystem"):
        for path in ("/tmp", env_value("ALTIMAGE_DATA_DIR")):
            if path not in mounts:
                problems.append(f"read-only root filesystem but nothing writable mounted at {path}")

    secrets = {s["metadata"]["name"]: s for s in by_kind(objects, "Secret")}
    for name in ("ALTIMAGE_DATABASE_URL", "ALTIMAGE_ADMIN_TOKEN", "STRIPE_SECRET_KEY"):
        ref = (env.get(name, {}).get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            problems.append(f"{name} must come from a Secret")
            continue
        secret = secrets.get(ref["name"])
        if secret is None:
            if ref["name"] not in (EXTERNAL_DATABASE_SECRET, EXTERNAL_SECRET):
                problems.append(f"{name} refers to Secret {ref['name']} that is neither rendered nor the operator's")
        elif ref["key"] not in (secret.get("data") or {}) and not ref.get("optional"):
            problems.append(f"{name}: Secret {ref['name']} has no key {ref['key']}")
    if "ALTIMAGE_DATA_DIR" not in env:
        problems.append("ALTIMAGE_DATA_DIR missing")

    services = by_kind(objects, "Service")
    if len(services) != 1:
        problems.append(f"expected one Service, got {len(services)}")
    else:
        service = services[0]
        if not subset(service["spec"].get("selector", {}), pod_labels):
            problems.append("Service selector does not match the pod labels")
        for port in service["spec"].get("ports", []):
            if port.get("targetPort") not in ports and port.get("targetPort") not in ports.values():
                problems.append(f"Service targetPort {port.get('targetPort')} is no container port")

    pdbs = by_kind(objects, "PodDisruptionBudget")
    if len(pdbs) != 1:
        problems.append(f"expected one PodDisruptionBudget, got {len(pdbs)}")
    else:
        spec = pdbs[0]["spec"]
        if not subset(spec.get("selector", {}).get("matchLabels", {}), pod_labels):
            problems.append("PodDisruptionBudget selector does not match the pod labels")
        if "minAvailable" not in spec and "maxUnavailable" not in spec:
            problems.append("PodDisruptionBudget has neither minAvailable nor maxUnavailable")

    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    if expect["hpa"] is None:
        if hpas:
            problems.append("HorizontalPodAutoscaler rendered although autoscaling is off")
        if "replicas" not in deployment["spec"]:
            problems.append("Deployment without replicas and without autoscaler")
    elif len(hpas) != 1:
        problems.append(f"expected one HorizontalPodAutoscaler, got {len(hpas)}")
    else:
        spec = hpas[0]["spec"]
        target = spec.get("scaleTargetRef", {})
        if (target.get("kind"), target.get("name")) != ("Deployment", deployment["metadata"]["name"]):
            problems.append(f"HorizontalPodAutoscaler targets {target}")
        if "replicas" in deployment["spec"]:
            problems.append("Deployment sets replicas although the autoscaler owns them")
        metrics = spec.get("metrics") or []
        if not metrics:
            problems.append("HorizontalPodAutoscaler has no metrics")
        if expect["hpa"] == "pods":
            queue = [
                m for m in metrics
                if m.get("type") == "Pods" and m["pods"]["metric"]["name"] == "altimage_queue_depth"
                and m["pods"]["target"].get("type") == "AverageValue"
            ]
            if not queue:
                problems.append("HorizontalPodAutoscaler lacks the Pods metric altimage_queue_depth")
        if expect["hpa"] == "cpu":
            cpu = [m for m in metrics if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"]
            if not cpu:
                problems.append("HorizontalPodAutoscaler lacks the CPU fall-back metric")
            if "cpu" not in requests:
                problems.append("CPU autoscaling needs resources.requests.cpu")

    monitors = by_kind(objects, "ServiceMonitor")
    if not expect["service_monitor"]:
        if monitors:
            problems.append("ServiceMonitor rendered although disabled")
    elif len(monitors) != 1:
        problems.append(f"expected one ServiceMonitor, got {len(monitors)}")
    elif services:
        spec = monitors[0]["spec"]
        if not subset(spec.get("selector", {}).get("matchLabels", {}), services[0]["metadata"].get("labels", {})):
            problems.append("ServiceMonitor selector does not match the Service labels")
        port_names = {p.get("name") for p in services[0]["spec"].get("ports", [])}
        endpoints = spec.get("endpoints") or []
        if not endpoints or any(e.get("port") not in port_names or e.get("path") != "/metrics" for e in endpoints):
            problems.append(f"ServiceMonitor endpoints must scrape /metrics on a Service port: {endpoints}")

    rules = by_kind(objects, "PrometheusRule")
    if not expect["rule"]:
        if rules:
            problems.append("PrometheusRule rendered although disabled")
    elif len(rules) != 1:
        problems.append(f"expected one PrometheusRule, got {len(rules)}")
    else:
        alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
        if rules[0]["spec"].get("groups") != alerts["groups"]:
            problems.append("PrometheusRule groups differ from deploy/prometheus/alerts.yml")
    return problems


def schema_problems(objects):
    problems = []
    for obj in objects:
        if obj.get("kind") in CRD_KINDS:
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                problems.append(f"{obj.get('kind')} {obj.get('metadata', {}).get('name')} (Kubernetes {version}): {e}")
    return problems


def cmd_chart():
    problems = []
    for name, (values_files, sets, expect) in VARIANTS.items():
        lint = run(HELM, "lint", "--strict", CHART, *helm_args(values_files, sets), check=False)
        if lint.returncode != 0:
            problems.append(f"[{name}] helm lint --strict:\n{lint.stdout}{lint.stderr}")
            continue
        objects = render(values_files, sets)
        problems += [f"[{name}] {p}" for p in check_objects(objects, expect) + schema_problems(objects)]
        print(f"chart {name}: {len(objects)} objects: {', '.join(sorted(o['kind'] for o in objects))}")
    # Without PostgreSQL the chart must refuse to render rather than run replicas on SQLite.
    no_db = run(HELM, "template", "altimage", CHART, "--set", "database.existingSecret=", check=False)
    if no_db.returncode == 0 or "PostgreSQL" not in no_db.stderr:
        problems.append(f"rendering without a database must fail naming PostgreSQL: {no_db.stderr}")
    return problems


# ---------------------------------------------------------------- configs


def promtool(*args):
    result = run(PROMTOOL, *args, check=False)
    return [] if result.returncode == 0 else [f"promtool {' '.join(map(str, args))}:\n{result.stdout}{result.stderr}"]


def dashboard_exprs(dashboard):
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            yield panel.get("title"), target.get("expr", "")


def check_compose(compose):
    problems = []
    services = compose.get("services", {})
    for name in ("altimage", "postgres", "prometheus", "grafana"):
        if name not in services:
            problems.append(f"compose: service {name} missing")
    app = services.get("altimage", {})
    env = app.get("environment", {})
    if env.get("ALTIMAGE_LISTEN") != "0.0.0.0:8080":
        problems.append("compose: ALTIMAGE_LISTEN must be 0.0.0.0:8080")
    if not str(env.get("ALTIMAGE_DATABASE_URL", "")).startswith("postgres://"):
        problems.append("compose: ALTIMAGE_DATABASE_URL must be a postgres:// URL")
    for name in ("ALTIMAGE_DATA_DIR", "ALTIMAGE_ADMIN_TOKEN", "STRIPE_SECRET_KEY", "ALTIMAGE_MODEL_DIR"):
        if name not in env:
            problems.append(f"compose: altimage environment lacks {name}")
    devices = app.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices):
        problems.append("compose: altimage has no NVIDIA GPU reservation")
    dockerfile = ROOT / app.get("build", {}).get("dockerfile", "missing")
    if not dockerfile.is_file():
        problems.append(f"compose: build.dockerfile {dockerfile} does not exist")
    grace = re.fullmatch(r"(\d+)s", str(app.get("stop_grace_period", "")))
    shutdown = int(env.get("ALTIMAGE_SHUTDOWN_TIMEOUT_SECS", 25))
    if not grace or int(grace.group(1)) < shutdown + SERVER_HARD_STOP_SECONDS:
        problems.append("compose: stop_grace_period must exceed ALTIMAGE_SHUTDOWN_TIMEOUT_SECS + 2 s")
    if "postgres" not in app.get("depends_on", {}):
        problems.append("compose: altimage must wait for postgres")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and not (DEPLOY / source).exists():
                problems.append(f"compose: {name} mounts {source}, which does not exist")
    return problems


def check_dockerfiles():
    problems = []
    channel = re.search(r'channel\s*=\s*"([^"]+)"', (ROOT / "rust-toolchain.toml").read_text()).group(1)
    ort_version = re.search(r"ORT_VERSION:-([0-9.]+)", (ROOT / "scripts" / "install-ort.sh").read_text()).group(1)
    for name, base in [("Dockerfile", r"nvidia/cuda:[^\s]*cudnn-runtime"), ("Dockerfile.cpu", r"debian:[^\s]*-slim")]:
        text = (DEPLOY / "docker" / name).read_text()
        where = f"deploy/docker/{name}"
        if f"ARG RUST_VERSION={channel}\n" not in text:
            problems.append(f"{where}: RUST_VERSION must equal rust-toolchain.toml's {channel}")
        if f"ARG ORT_VERSION={ort_version}\n" not in text:
            problems.append(f"{where}: ORT_VERSION must equal scripts/install-ort.sh's {ort_version}")
        if not re.search(base, text):
            problems.append(f"{where}: runtime base must match {base}")
        if "scripts/install-ort.sh" not in text:
            problems.append(f"{where}: ONNX Runtime must come from scripts/install-ort.sh")
        healthcheck = re.search(r"^HEALTHCHECK (?:[^\n]*\\\n)*[^\n]*", text, re.M)
        if not healthcheck or "/health/live" not in healthcheck.group(0):
            problems.append(f"{where}: HEALTHCHECK on /health/live missing")
        users = re.findall(r"^USER (\S+)", text, re.M)
        if not users or users[-1].split(":")[0] in ("0", "root"):
            problems.append(f"{where}: must end as a non-root USER")
        if "ALTIMAGE_LISTEN=0.0.0.0:8080" not in text:
            problems.append(f"{where}: ALTIMAGE_LISTEN=0.0.0.0:8080 missing")
        if not re.search(r"^ARG MODEL=", text, re.M):
            problems.append(f"{where}: the MODEL build argument is missing")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in ("target/", ".cache/", "models/base-shaped/", "**/node_modules/"):
        if entry not in ignored:
            problems.append(f".dockerignore lacks {entry}")
    return problems


def cmd_configs():
    problems = []
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    problems += check_compose(compose)
    problems += promtool("check", "config", DEPLOY / "prometheus" / "prometheus.yml")
    problems += promtool("check", "rules", DEPLOY / "prometheus" / "alerts.yml")
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = [r for g in alerts.get("groups", []) for r in g.get("rules", [])]
    if not rules:
        problems.append("alerts.yml has no rules")
    for rule in rules:
        if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
            problems.append(f"alert {rule.get('alert')}: severity must be critical or warning")
        if not rule.get("annotations", {}).get("summary") or "for" not in rule:
            problems.append(f"alert {rule.get('alert')}: needs a summary and a for duration")
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for s in prometheus.get("scrape_configs", []) for c in s.get("static_configs", []) for t in c.get("targets", [])]
    if "altimage:8080" not in targets:
        problems.append("prometheus.yml does not scrape altimage:8080")

    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    uids = {d["uid"] for d in datasources if d.get("type") == "prometheus"}
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/altimage.yml").read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    if mounts.get("./grafana/dashboards") not in [p["options"]["path"] for p in providers]:
        problems.append("the Grafana dashboard provider does not read the folder Compose mounts")
    dashboards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    if not dashboards:
        problems.append("no Grafana dashboard")
    recording = []
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        panels = dashboard.get("panels", [])
        ids = [p.get("id") for p in panels]
        if not dashboard.get("uid") or not panels or len(set(ids)) != len(ids):
            problems.append(f"{path.name}: needs a uid and panels with unique ids")
        for panel in panels:
            if panel.get("type") == "row":
                # A section header: no queries of its own.
                if "gridPos" not in panel or panel.get("targets"):
                    problems.append(f"{path.name}: row {panel.get('title')} needs a position and no queries")
                continue
            if panel.get("datasource", {}).get("uid") not in uids:
                problems.append(f"{path.name}: panel {panel.get('title')} uses an unprovisioned datasource")
            if not panel.get("targets") or "gridPos" not in panel:
                problems.append(f"{path.name}: panel {panel.get('title')} has no queries or no position")
        for i, (title, expr) in enumerate(dashboard_exprs(dashboard)):
            if not expr.strip():
                problems.append(f"{path.name}: panel {title} has an empty query")
            # Grafana's interval variables are not PromQL; promtool checks the rest of the syntax.
            recording.append({"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}, f)
    try:
        problems += [f"a dashboard query is not valid PromQL: {p}" for p in promtool("check", "rules", f.name)]
    finally:
        os.unlink(f.name)
    problems += check_dockerfiles()
    print(f"configs: compose {len(compose['services'])} services, {len(rules)} alert rules, {len(recording)} dashboard queries")
    return problems


# ---------------------------------------------------------------- metrics


def parse_exposition(text):
    """Sample name -> list of label dicts, and metric family -> type."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
        elif line and not line.startswith("#"):
            match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s", line)
            if match:
                labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
                samples.setdefault(match.group(1), []).append(labels)
    return samples, types


def referenced_exprs(gpu_objects):
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for title, expr in dashboard_exprs(json.loads(path.read_text())):
            yield f"{path.name} panel {title}", expr
    # The operator's guide names metrics too; a renamed metric must not leave it behind.
    yield "deploy/README.md", (DEPLOY / "README.md").read_text()
    for hpa in by_kind(gpu_objects, "HorizontalPodAutoscaler"):
        for metric in hpa["spec"].get("metrics", []):
            if metric.get("type") == "Pods":
                yield "HorizontalPodAutoscaler", metric["pods"]["metric"]["name"]


def metric_problems(exposition, references, statuses=()):
    """`statuses`: the HTTP statuses the server documents (OpenAPI). Series of a status appear only
    once one was answered, so a status label may also name one of those."""
    samples, types = parse_exposition(exposition)
    problems, seen = [], set()
    for where, expr in references:
        names = set(re.findall(r"\b(altimage_[a-zA-Z0-9_]+)\b", expr))
        if not names and not FOREIGN_METRICS & set(re.findall(r"\b([a-z_]+)\{", expr)):
            problems.append(f"{where}: uses no altimage metric: {expr}")
        for name in sorted(names):
            seen.add(name)
            if name not in samples:
                problems.append(f"{where}: {name} is not exported by the server")
                continue
            for selector in re.findall(rf"\b{name}\{{([^}}]*)\}}", expr):
                for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector):
                    values = {s.get(label) for s in samples[name]}
                    if label == "status" and None not in values:
                        values |= set(statuses)
                    if op == "=" and value not in values:
                        problems.append(f"{where}: {name} has no series with {label}=\"{value}\" (has {sorted(v for v in values if v)})")
                    if op == "=~" and not any(v is not None and re.fullmatch(value, v) for v in values):
                        problems.append(f"{where}: {name} has no series matching {label}=~\"{value}\"")
        if where == "HorizontalPodAutoscaler" and types.get(expr) != "gauge":
            problems.append(f"the autoscaler's metric {expr} must be a gauge, is {types.get(expr)}")
    return problems, seen


def documented_statuses(openapi):
    return {code for path in openapi.get("paths", {}).values() for op in path.values() if isinstance(op, dict) for code in op.get("responses", {})}


def cmd_metrics(exposition_file, openapi_file):
    exposition = Path(exposition_file).read_text()
    statuses = documented_statuses(json.loads(Path(openapi_file).read_text()))
    if "500" not in statuses or "201" not in statuses:
        return [f"the OpenAPI document lists no 201/500 responses: {sorted(statuses)}"]
    references = list(referenced_exprs(render(["values-gpu.yaml"])))
    problems, seen = metric_problems(exposition, references, statuses)
    print(f"metrics: {len(seen)} altimage metric names referenced, all checked against the live /metrics")
    if len(seen) < 10:
        problems.append(f"only {len(seen)} metric names found in alerts and dashboards: the extraction is broken")
    return problems


# ---------------------------------------------------------------- self test


def container_of(objects):
    return by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]


def pod_of(objects):
    return by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]


def cmd_selftest():
    """The checks must catch what they guard: each broken rendering has to produce a problem."""
    default = render()
    gpu = render(["values-gpu.yaml"])
    expect_default, expect_gpu = VARIANTS["default"][2], VARIANTS["gpu"][2]

    def drop(path):
        def mutate(objects):
            target = container_of(objects)
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]
        return mutate

    def remove_kind(kind):
        def mutate(objects):
            objects[:] = [o for o in objects if o.get("kind") != kind]
        return mutate

    def set_env(name, value):
        def mutate(objects):
            for e in container_of(objects)["env"]:
                if e["name"] == name:
                    e.clear()
                    e.update({"name": name, "value": value})
        return mutate

    cases = [
        ("no resources", default, expect_default, drop(["resources"])),
        ("no memory limit", default, expect_default, drop(["resources", "limits", "memory"])),
        ("no readiness probe", default, expect_default, drop(["readinessProbe"])),
        ("no liveness probe", default, expect_default, drop(["livenessProbe"])),
        ("no startup probe", default, expect_default, drop(["startupProbe"])),
        ("short startup probe", default, expect_default, lambda o: container_of(o)["startupProbe"].update(failureThreshold=3)),
        ("no preStop", default, expect_default, drop(["lifecycle", "preStop"])),
        ("grace below the drain", default, expect_default, lambda o: pod_of(o).update(terminationGracePeriodSeconds=20)),
        ("no grace period", default, expect_default, lambda o: pod_of(o).pop("terminationGracePeriodSeconds")),
        ("no PDB", default, expect_default, remove_kind("PodDisruptionBudget")),
        ("listen on loopback", default, expect_default, set_env("ALTIMAGE_LISTEN", "127.0.0.1:8080")),
        ("admin token in plain text", default, expect_default, set_env("ALTIMAGE_ADMIN_TOKEN", "secret")),
        ("root user", default, expect_default, lambda o: pod_of(o)["securityContext"].pop("runAsNonRoot")),
        ("no model volume", default, expect_default, lambda o: container_of(o).update(volumeMounts=container_of(o)["volumeMounts"][:2])),
        ("no GPU request", gpu, expect_gpu, drop(["resources", "limits", "nvidia.com/gpu"])),
        ("GPU pod on the CPU", gpu, expect_gpu, set_env("ALTIMAGE_DEVICE", "cpu")),
        ("no HPA", gpu, expect_gpu, remove_kind("HorizontalPodAutoscaler")),
        ("HPA without metrics", gpu, expect_gpu, lambda o: by_kind(o, "HorizontalPodAutoscaler")[0]["spec"].update(metrics=[])),
        ("HPA on another metric", gpu, expect_gpu, lambda o: by_kind(o, "HorizontalPodAutoscaler")[0]["spec"]["metrics"][0]["pods"]["metric"].update(name="x")),
        ("no ServiceMonitor", gpu, expect_gpu, remove_kind("ServiceMonitor")),
    ]
    problems = []
    if check_objects(default, expect_default) or check_objects(gpu, expect_gpu):
        problems.append("the unbroken renderings must pass before the broken ones can mean anything")
    for name, objects, expect, mutate in cases:
        broken = copy.deepcopy(objects)
        mutate(broken)
        if not check_objects(broken, expect):
            problems.append(f"check_objects did not notice: {name}")

    broken = copy.deepcopy(default)
    container_of(broken)["bogusField"] = 1
    del container_of(broken)["name"]
    if not schema_problems(by_kind(broken, "Deployment")):
        problems.append("schema validation did not notice an unknown field and a missing container name")

    exposition = (
        "# TYPE altimage_queue_depth gauge\naltimage_queue_depth 0\n"
        'altimage_rejected_total{reason="overloaded"} 0\naltimage_requests_total{route="/",status="201"} 0\n'
    )
    for name, references in [
        ("unknown metric", [("x", "rate(altimage_nonexistent_total[5m])")]),
        ("unknown label value", [("x", 'rate(altimage_rejected_total{reason="nope"}[5m])')]),
        ("HPA metric missing", [("HorizontalPodAutoscaler", "altimage_queue_seconds")]),
        ("no altimage metric", [("x", "vector(1)")]),
        ("undocumented status", [("x", 'altimage_requests_total{status="599"}')]),
    ]:
        if not metric_problems(exposition, references, {"201", "500"})[0]:
            problems.append(f"metric_problems did not notice: {name}")
    good = 'altimage_rejected_total{reason="overloaded"} + altimage_queue_depth + altimage_requests_total{status="500"}'
    if metric_problems(exposition, [("x", good)], {"201", "500"})[0]:
        problems.append("metric_problems refuses a correct reference")
    print(f"selftest: {len(cases)} broken renderings, 1 schema case, 5 metric cases")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=["chart", "configs", "metrics", "selftest"])
    parser.add_argument("--exposition", help="a scrape of the server's /metrics (for `metrics`)")
    parser.add_argument("--openapi", help="the server's /openapi.json (for `metrics`)")
    args = parser.parse_args()
    if args.check == "metrics":
        if not args.exposition or not args.openapi:
            parser.error("metrics needs --exposition and --openapi")
        problems = cmd_metrics(args.exposition, args.openapi)
    else:
        problems = {"chart": cmd_chart, "configs": cmd_configs, "selftest": cmd_selftest}[args.check]()
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
