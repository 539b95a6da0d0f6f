"""`make k8s-test`: the Helm chart and the KServe manifests, checked offline.

- `helm lint --strict` with the default values and every value set in deploy/helm/berth/ci/;
- `helm template` of each value set, every rendered document validated by kubernetes-validate
  (--strict, against the Kubernetes version given), plus what each value set must produce;
- custom resources (ServiceMonitor, ServingRuntime, InferenceService, Cloud Run's Knative
  Service), which kubernetes-validate does not know: their containers and pod fields validated as a core Pod, the rest by shape;
- every bad values file in deploy/helm/bad-values/ refused by values.schema.json with the error
  its `# expect:` line names;
- yamllint on every YAML file that is not a Helm template.

Usage: build/tools/venv/bin/python scripts/k8s_test.py --helm HELM [--kube-version 1.30.0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy/helm/berth"
BAD_VALUES = ROOT / "deploy/helm/bad-values"
KSERVE = ROOT / "deploy/kserve"
OUT = ROOT / "build/k8s-test"
BIN = Path(sys.executable).parent

Docs = list[dict[str, Any]]
failures: list[str] = []


def check(condition: bool, what: str) -> None:
    print(f"    {'ok  ' if condition else 'FAIL'} {what}", flush=True)
    if not condition:
        failures.append(what)


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def of_kind(docs: Docs, kind: str) -> Docs:
    return [d for d in docs if d["kind"] == kind]


def container(docs: Docs, kind: str = "Deployment") -> dict[str, Any]:
    return of_kind(docs, kind)[0]["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


# What each value set must render, beyond being valid.
def expect_default(docs: Docs) -> None:
    kinds = Counter(d["kind"] for d in docs)
    check(
        kinds["Deployment"] == 1 and kinds["Service"] == 1,
        f"Deployment and Service ({dict(kinds)})",
    )
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check(c["livenessProbe"]["httpGet"]["path"] == "/health", "liveness probe on /health")
    check(c["readinessProbe"]["httpGet"]["path"] == "/ready", "readiness probe on /ready")
    check(c["startupProbe"]["httpGet"]["path"] == "/ready", "startup probe on /ready")
    check(c["securityContext"]["readOnlyRootFilesystem"] is True, "read-only root filesystem")
    check(pod["securityContext"]["runAsNonRoot"] is True, "runs as non-root")
    check(any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), "an emptyDir at /tmp")
    check(pod["terminationGracePeriodSeconds"] == 40, "grace = 5 + 30 + 5 s from the config")
    config = of_kind(docs, "ConfigMap")[0]["data"]
    check(config.get("BERTH_SHUTDOWN_TIMEOUT_S") == "30", "config rendered into the ConfigMap")
    check(env_of(c)["BERTH_MODELS"] == "intent", "BERTH_MODELS=intent")
    check(not of_kind(docs, "HorizontalPodAutoscaler"), "no HPA when autoscaling is off")


def expect_single(docs: Docs) -> None:
    c = container(docs)
    check(c["image"] == "registry.example.com/berth-tabular:1", f"image {c['image']}")
    check(env_of(c)["BERTH_MODELS"] == "tabular", "BERTH_MODELS=tabular")
    check(of_kind(docs, "Deployment")[0]["spec"]["replicas"] == 2, "2 replicas")
    test_pod = [d for d in of_kind(docs, "Pod") if "helm.sh/hook" in d["metadata"]["annotations"]]
    models = json.loads(env_of(test_pod[0]["spec"]["containers"][0])["MODELS"])
    check(models[0]["inputSize"] == 30, "helm test sends 30 features (seed: input size)")


def expect_multi(docs: Docs) -> None:
    c = container(docs)
    env = env_of(c)
    check(
        env["BERTH_MODELS"] == "intent,tabular@3,regression@staging",
        f"BERTH_MODELS={env['BERTH_MODELS']}",
    )
    check(env.get("BERTH_REGISTRY_URL") == "s3://berth-models/registry", "registry on S3")
    check(env.get("BERTH_API_KEYS_FILE") == "/etc/berth/keys/keys.json", "API keys file set")
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    check(secrets == ["berth-api-keys"], f"API keys from a Secret ({secrets})")
    check(
        {"secretRef": {"name": "berth-s3-credentials"}} in c["envFrom"],
        "S3 credentials from a Secret",
    )
    paths = [p["path"] for p in of_kind(docs, "Ingress")[0]["spec"]["rules"][0]["http"]["paths"]]
    check(
        paths[:3] == ["/berth/models/intent", "/berth/models/tabular", "/berth/models/regression"],
        f"one ingress path per model ({paths})",
    )
    ports = {p["name"]: p["port"] for p in of_kind(docs, "Service")[0]["spec"]["ports"]}
    check(ports == {"http": 8000, "grpc": 8001}, f"HTTP and gRPC service ports ({ports})")
    check(len(of_kind(docs, "ServiceMonitor")) == 1, "a ServiceMonitor")
    config = of_kind(docs, "ConfigMap")[0]["data"]
    check(config.get("BERTH_STRICT_LIBRARY_VERSIONS") == "true", "booleans rendered as strings")


def expect_autoscaling(docs: Docs) -> None:
    hpa = of_kind(docs, "HorizontalPodAutoscaler")
    check(len(hpa) == 1, "an HPA")
    metrics = hpa[0]["spec"]["metrics"]
    check(
        [m["type"] for m in metrics] == ["Resource", "Pods"],
        f"CPU and a custom metric ({[m['type'] for m in metrics]})",
    )
    check(metrics[1]["pods"]["metric"]["name"] == "berth_requests_in_flight", "in-flight metric")
    check("replicas" not in of_kind(docs, "Deployment")[0]["spec"], "HPA owns the replica count")
    check(
        of_kind(docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 2, "PDB minAvailable 2"
    )
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    check(pod["terminationGracePeriodSeconds"] == 60, "explicit terminationGracePeriodSeconds")


def expect_kserve(docs: Docs) -> None:
    kinds = {d["kind"] for d in docs}
    check("Deployment" not in kinds and "Service" not in kinds, f"no Deployment/Service ({kinds})")
    runtime = of_kind(docs, "ServingRuntime")[0]["spec"]
    check(runtime["protocolVersions"] == ["v2"], "V2 protocol")
    check(env_of(runtime["containers"][0])["MODEL_NAME"] == "{{.Name}}", "KServe's {{.Name}} kept")
    isvc = of_kind(docs, "InferenceService")[0]["spec"]["predictor"]
    check(isvc["canaryTrafficPercent"] == 10, "a 10% canary")
    check(isvc["model"]["storageUri"] == "s3://berth-models/registry/intent", "storageUri")
    check(env_of(isvc["model"]) == {"MODEL_VERSION": "2"}, "the canary serves version 2")


def expect_kserve_grpc(docs: Docs) -> None:
    runtime = of_kind(docs, "ServingRuntime")[0]["spec"]
    c = runtime["containers"][0]
    check(runtime["protocolVersions"] == ["grpc-v2"], "gRPC V2 protocol")
    check(c["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}], "h2c port")
    check(env_of(c)["BERTH_GRPC_PORT"] == "8081", "gRPC port on")
    check(not of_kind(docs, "InferenceService"), "no InferenceService unless asked")


VALUE_SETS: dict[str, Callable[[Docs], None]] = {
    "default": expect_default,
    "single-model-values.yaml": expect_single,
    "multi-model-values.yaml": expect_multi,
    "autoscaling-values.yaml": expect_autoscaling,
    "kserve-values.yaml": expect_kserve,
    "kserve-grpc-values.yaml": expect_kserve_grpc,
}


def validate_core(path: Path, documents: int, kube_version: str) -> None:
    """kubernetes-validate --strict: every document passes, or is a custom resource it skips."""
    result = run([str(BIN / "kubernetes-validate"), "--strict", "-k", kube_version, str(path)])
    lines = (result.stdout + result.stderr).strip().splitlines()
    errors = [line for line in lines if line.startswith("ERROR")]
    passed = [line for line in lines if "passed for resource" in line]
    custom = [line for line in lines if "Couldn't find schema for kind" in line]
    check(
        result.returncode == 0 and not errors and len(passed) + len(custom) == documents,
        f"kubernetes-validate --strict {path.name}: {len(passed)} passed, {len(custom)} custom "
        f"of {documents}",
    )
    for line in errors:
        print("        " + line)


def validate_custom(docs: Docs, source: str, kube_version: str) -> None:
    """Custom resources: their pod parts as a core Pod (strict), their own fields by shape."""
    for doc in docs:
        kind = doc["kind"]
        spec = doc.get("spec", {})
        if kind == "ServingRuntime":
            check(set(spec) <= SERVING_RUNTIME_FIELDS, f"{source}: ServingRuntime fields known")
            pod = {"containers": spec["containers"], "volumes": spec.get("volumes", [])}
        elif kind == "InferenceService":
            predictor = spec["predictor"]
            check(set(predictor) <= PREDICTOR_FIELDS, f"{source}: predictor fields known")
            model = dict(predictor["model"])
            check(
                {"modelFormat", "storageUri"} <= set(model) and set(model) <= MODEL_FIELDS,
                f"{source}: predictor.model fields known",
            )
            for field in MODEL_FIELDS - CONTAINER_FIELDS:
                model.pop(field, None)
            pod = {"containers": [{"name": "kserve-container", "image": "x", **model}]}
        elif kind == "Service" and doc["apiVersion"].startswith("serving.knative.dev/"):
            pod = {"containers": spec["template"]["spec"]["containers"]}  # Cloud Run
        elif kind == "ServiceMonitor":
            endpoint = spec["endpoints"][0]
            check(
                set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
                and endpoint["path"] == "/metrics",
                f"{source}: ServiceMonitor scrapes /metrics",
            )
            continue
        else:
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=OUT, delete=False) as handle:
            yaml.safe_dump(
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod},
                handle,
            )
        result = run(
            [str(BIN / "kubernetes-validate"), "--strict", "-k", kube_version, handle.name]
        )
        check(result.returncode == 0, f"{source}: {kind}'s pod spec valid as a core Pod")
        if result.returncode != 0:
            print("        " + (result.stdout + result.stderr).strip().replace("\n", "\n        "))
        Path(handle.name).unlink()


# Field names from KServe's CRDs (serving.kserve.io v1alpha1 ServingRuntime, v1beta1 predictor).
SERVING_RUNTIME_FIELDS = {
    "annotations", "labels", "supportedModelFormats", "protocolVersions", "containers",
    "volumes", "nodeSelector", "affinity", "tolerations", "imagePullSecrets", "multiModel",
    "disabled", "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint", "replicas",
    "storageHelper", "builtInAdapter", "workerSpec", "hostIPC",
}  # fmt: skip
PREDICTOR_FIELDS = {
    "model", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "canaryTrafficPercent",
    "containerConcurrency", "timeout", "batcher", "logger", "serviceAccountName", "nodeSelector",
    "tolerations", "affinity", "volumes", "containers", "annotations", "labels",
    "imagePullSecrets", "deploymentStrategy", "workerSpec",
}  # fmt: skip
CONTAINER_FIELDS = {"env", "resources", "args", "command", "ports", "volumeMounts", "image"}
MODEL_FIELDS = {"modelFormat", "runtime", "protocolVersion", "storageUri", *CONTAINER_FIELDS}


def render(helm: str, values: Path | None, kube_version: str) -> tuple[Path, Docs]:
    name = values.name if values else "default"
    target = OUT / f"rendered-{name.removesuffix('.yaml')}.yaml"
    args = [helm, "template", "release", str(CHART), "--kube-version", kube_version]
    if values:
        args += ["-f", str(values)]
    result = run(args)
    if result.returncode != 0:
        check(False, f"helm template {name}: {result.stderr.strip()}")
        return target, []
    target.write_text(result.stdout)
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    check(True, f"helm template {name}: {len(docs)} documents")
    return target, docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", required=True)
    parser.add_argument("--kube-version", default="1.30.0")
    args = parser.parse_args()
    started = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)

    print("--> helm lint --strict")
    for values in [None, *sorted((CHART / "ci").glob("*.yaml"))]:
        extra = ["-f", str(values)] if values else []
        result = run([args.helm, "lint", "--strict", str(CHART), *extra])
        check(result.returncode == 0, f"helm lint --strict {values.name if values else ''}")
        if result.returncode != 0:
            print(result.stdout + result.stderr)

    print("--> helm template, kubernetes-validate, expectations")
    for name, expect in VALUE_SETS.items():
        values = None if name == "default" else CHART / "ci" / name
        path, docs = render(args.helm, values, args.kube_version)
        if not docs:
            continue
        validate_core(path, len(docs), args.kube_version)
        validate_custom(docs, path.name, args.kube_version)
        expect(docs)
    missing = {p.name for p in (CHART / "ci").glob("*.yaml")} - set(VALUE_SETS)
    check(not missing, f"every value set in ci/ has expectations ({sorted(missing)})")

    print("--> deploy/kserve manifests, Cloud Run service")
    for path in [*sorted(KSERVE.glob("*.yaml")), ROOT / "deploy/cloudrun/service.yaml"]:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        validate_core(path, len(docs), args.kube_version)
        validate_custom(docs, path.name, args.kube_version)

    print("--> bad values are refused by values.schema.json")
    for path in sorted(BAD_VALUES.glob("*.yaml")):
        expected = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
        result = run([args.helm, "template", "r", str(CHART), "-f", str(path),
                      "--kube-version", args.kube_version])  # fmt: skip
        check(
            result.returncode != 0 and "schema" in result.stderr and expected in result.stderr,
            f"{path.name} refused: {expected!r}",
        )

    print("--> yamllint")
    result = subprocess.run(
        [str(BIN / "yamllint"), "--strict", "-c", ".yamllint.yaml", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    check(result.returncode == 0, "yamllint --strict (everything but Helm templates)")
    if result.returncode != 0:
        print(result.stdout + result.stderr)

    print(f"k8s-test: {time.monotonic() - started:.1f} s")
    if failures:
        sys.exit(f"k8s-test: {len(failures)} check(s) failed")
    print("k8s-test: all checks passed")


if __name__ == "__main__":
    main()
