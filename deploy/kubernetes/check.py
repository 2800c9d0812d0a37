#!/usr/bin/env python3
"""Render the manifests into a temporary directory and validate them.

    check.py [--values FILE] [--initdata FILE] [--kubernetes-version X.Y] [--self-test]

Renders both variants (Deployment + Service, and the KServe InferenceService; the committed values pick
one, the other is rendered with kserve.enabled flipped) and checks:

  * every Kubernetes built-in object (Deployment, Service, HorizontalPodAutoscaler, NetworkPolicy) against
    the OpenAPI schema of the newest Kubernetes release the kubernetes-validate package ships, strictly
    (unknown fields are errors);
  * the KServe InferenceService structurally (no KServe CRD schema is packaged on PyPI): apiVersion and
    kind, metadata, spec.predictor as a custom predictor (containers, no framework key, only KServe's
    component fields besides the inlined PodSpec), containers[0] named kserve-container with the image
    pinned by digest, runtimeClassName, PROTOCOL=v2, port 8443; and its inlined PodSpec, wrapped in a
    core/v1 Pod, against the Kubernetes schema like the built-ins;
  * the invariants the templates promise: the initdata annotation decodes to the exact document bytes,
    the enclave's arguments, probes, security context, resources, the Service/HPA/NetworkPolicy pointing at
    the pods; kustomization.yaml lists exactly the rendered files (and `kubectl kustomize` builds it when
    kubectl is installed).

--self-test also checks that render.py refuses bad input (image by tag, bad model digest, min > max, and
more) with exit status 2, and that the validators reject broken manifests.

Needs PyYAML and kubernetes-validate:  python3 -m venv /tmp/k8s-venv &&
/tmp/k8s-venv/bin/pip install kubernetes-validate pyyaml && /tmp/k8s-venv/bin/python deploy/kubernetes/check.py
Exit status: 0 valid, 1 invalid (reasons on stderr), 2 usage or missing package.
"""

from __future__ import annotations

import argparse
import base64
import copy
import gzip
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import render  # noqa: E402  (the renderer beside this file)

try:
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover
    print(f"check.py: missing Python package ({e.name}): pip install kubernetes-validate pyyaml", file=sys.stderr)
    sys.exit(2)

IMAGE_BY_DIGEST = re.compile(r"^[^@:\s]+(?::[0-9]+)?(?:/[^@:\s]+)*@sha256:[0-9a-f]{64}$")
BUILTIN_KINDS = {
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
}
# spec.predictor of a KServe v1beta1 InferenceService = framework specs (one-of) + an inlined core/v1 PodSpec
# + ComponentExtensionSpec. From KServe's pkg/apis/serving/v1beta1 (predictor.go, component.go) and the
# field maps of its Python SDK's V1beta1PredictorSpec.
KSERVE_FRAMEWORK_KEYS = {
    "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml", "lightgbm",
    "paddle", "model", "storageUris", "workerSpec",
}
KSERVE_COMPONENT_KEYS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "containerConcurrency",
    "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy",
    "autoScaling", "storageContainerName",
}
KSERVE_SPEC_KEYS = {"predictor", "transformer", "explainer"}
KSERVE_CONTAINER = "kserve-container"
# What the OpenAPI schemas leave as free strings: the API server checks these, so check them here too.
PROTOCOLS = {"TCP", "UDP", "SCTP"}
QUANTITY = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def expect(self, cond: bool, where: str, what: str) -> None:
        if not cond:
            self.add(where, what)


# --------------------------------------------------------------------------------------------------
# Rendering


def render_cli(values: Path, out: Path, initdata: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(HERE / "render.py"), "--values", str(values), "--out", str(out)]
    if initdata is not None:
        cmd += ["--initdata", str(initdata)]
    return subprocess.run(cmd, capture_output=True, text=True)


def render_api(values_path: Path, out: Path, initdata: Path | None, overrides: dict) -> render.Values:
    values, _, data = render.prepare(values_path, initdata, overrides)
    render.write(render.render(values, data), out)
    return values


# --------------------------------------------------------------------------------------------------
# Validation


def k8s_validate(obj: dict, version: str, where: str, problems: Problems) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(top)"
        problems.add(where, f"Kubernetes {e.version} schema: at {path}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        problems.add(where, e.message)


def check_free_strings(node, where: str, problems: Problems, path: str = "") -> None:
    """Protocols and quantities anywhere in an object (the schemas type them as plain strings)."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}/{k}"
            if k == "protocol" and v not in PROTOCOLS:
                problems.add(where, f"at {here}: protocol {v!r} is not one of {sorted(PROTOCOLS)}")
            elif k in ("requests", "limits") and isinstance(v, dict):
                for rk, rv in v.items():
                    if not QUANTITY.match(str(rv)):
                        problems.add(where, f"at {here}/{rk}: {rv!r} is not a Kubernetes quantity")
            elif k in ("averageValue", "value") and path.endswith("/target") and not QUANTITY.match(str(v)):
                problems.add(where, f"at {here}: {v!r} is not a Kubernetes quantity")
            else:
                check_free_strings(v, where, problems, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_free_strings(v, where, problems, f"{path}/{i}")


def decode_annotation(value: str) -> bytes | None:
    try:
        return gzip.decompress(base64.b64decode(value, validate=True))
    except (ValueError, OSError, EOFError):
        return None


def check_pod(pod_meta: dict, pod_spec: dict, container_name: str, values: render.Values, initdata: bytes,
              where: str, problems: Problems) -> None:
    """The invariants of the enclave pod, shared by the Deployment and the InferenceService."""
    ann = pod_meta.get("annotations") or {}
    value = ann.get(render.INITDATA_ANNOTATION)
    if not isinstance(value, str):
        problems.add(where, f"pod annotation {render.INITDATA_ANNOTATION} is missing")
    else:
        problems.expect(decode_annotation(value) == initdata, where,
                        f"pod annotation {render.INITDATA_ANNOTATION} does not decode (base64, gzip) to the "
                        f"initdata document's exact bytes")
    for k, v in {"prometheus.io/scrape": "true", "prometheus.io/scheme": "https", "prometheus.io/path": "/metrics",
                 "prometheus.io/port": "8443"}.items():
        problems.expect(ann.get(k) == v, where, f"pod annotation {k} should be {v!r} (found {ann.get(k)!r})")
    labels = pod_meta.get("labels") or {}
    problems.expect(labels.get("app.kubernetes.io/name") == values.name, where,
                    "pod label app.kubernetes.io/name (selected by the Service and the NetworkPolicy) is wrong")

    problems.expect(pod_spec.get("runtimeClassName") == values.runtime_class, where,
                    f"runtimeClassName should be {values.runtime_class!r} (found {pod_spec.get('runtimeClassName')!r})")
    problems.expect(pod_spec.get("automountServiceAccountToken") is False, where,
                    "automountServiceAccountToken should be false")
    psc = pod_spec.get("securityContext") or {}
    problems.expect(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot should be true")
    problems.expect((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where,
                    "pod seccompProfile should be RuntimeDefault")

    containers = pod_spec.get("containers") or []
    if len(containers) != 1:
        problems.add(where, f"expected exactly one container (found {len(containers)})")
        return
    c = containers[0]
    problems.expect(c.get("name") == container_name, where, f"container name should be {container_name!r}")
    image = c.get("image", "")
    problems.expect(bool(IMAGE_BY_DIGEST.match(image)), where, f"image {image!r} is not pinned by digest")
    problems.expect(image == values.image, where, "image differs from values")
    if values.initdata_configmap:
        config_arg = f"--config-from-initdata={render.INITDATA_MOUNT_DIR}/{render.INITDATA_FILE}"
        want_mounts = [{"name": "initdata", "mountPath": render.INITDATA_MOUNT_DIR, "readOnly": True}]
        want_volumes = [{"name": "initdata", "configMap": {"name": f"{values.name}-initdata"}}]
    else:
        config_arg, want_mounts, want_volumes = "--config-from-initdata", [], []
    problems.expect((c.get("volumeMounts") or []) == want_mounts, where,
                    f"volumeMounts should be {want_mounts} (found {c.get('volumeMounts')})")
    problems.expect((pod_spec.get("volumes") or []) == want_volumes, where,
                    f"volumes should be {want_volumes} (found {pod_spec.get('volumes')})")
    expected_args = [config_arg, "--blobs", values.blobs_url, "--listen", "0.0.0.0:8443"]
    problems.expect(c.get("args") == expected_args, where, f"args should be {expected_args} (found {c.get('args')})")
    problems.expect("command" not in c, where, "command must not override the image's ENTRYPOINT")
    ports = c.get("ports") or []
    problems.expect(ports == [{"name": "oip-tls", "containerPort": 8443, "protocol": "TCP"}], where,
                    f"ports should be one TCP port 8443 named oip-tls (found {ports})")
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        problems.expect(get.get("scheme") == "HTTPS" and get.get("path") == path and get.get("port") == 8443,
                        where, f"{probe} should be httpGet HTTPS {path} on 8443 (found {get})")
    mem = f"{render.memory_mib(values.models, values.extra_memory_mib)}Mi"
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        got = res.get(part) or {}
        problems.expect(got.get("memory") == mem and str(got.get("cpu")) == values.cpu, where,
                        f"resources.{part} should be memory {mem}, cpu {values.cpu} (found {got})")
    sc = c.get("securityContext") or {}
    problems.expect(sc.get("runAsNonRoot") is True, where, "container runAsNonRoot should be true")
    problems.expect(sc.get("readOnlyRootFilesystem") is True, where, "readOnlyRootFilesystem should be true")
    problems.expect(sc.get("allowPrivilegeEscalation") is False, where, "allowPrivilegeEscalation should be false")
    problems.expect((sc.get("capabilities") or {}).get("drop") == ["ALL"], where, "capabilities should drop ALL")
    problems.expect((sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where,
                    "container seccompProfile should be RuntimeDefault")


def check_inferenceservice(obj: dict, version: str, values: render.Values, initdata: bytes, where: str,
                           problems: Problems) -> None:
    """Structural check of a serving.kserve.io/v1beta1 InferenceService with a custom predictor."""
    problems.expect(obj.get("apiVersion") == "serving.kserve.io/v1beta1", where, "apiVersion should be serving.kserve.io/v1beta1")
    problems.expect(obj.get("kind") == "InferenceService", where, "kind should be InferenceService")
    unknown = set(obj) - {"apiVersion", "kind", "metadata", "spec"}
    problems.expect(not unknown, where, f"unknown top-level fields {sorted(unknown)}")
    meta = obj.get("metadata") or {}
    problems.expect(meta.get("name") == values.name and meta.get("namespace") == values.namespace, where,
                    "metadata.name/namespace differ from values")
    ann = meta.get("annotations") or {}
    problems.expect(ann.get("serving.kserve.io/deploymentMode") in render.KSERVE_DEPLOYMENT_MODES, where,
                    "annotation serving.kserve.io/deploymentMode should be RawDeployment or Standard")
    problems.expect(ann.get("serving.kserve.io/autoscalerClass") == "external", where,
                    "annotation serving.kserve.io/autoscalerClass should be external (hpa.yaml scales the predictor)")
    problems.expect((meta.get("labels") or {}).get("networking.kserve.io/visibility") == "cluster-local", where,
                    "label networking.kserve.io/visibility should be cluster-local (no TLS-terminating ingress)")
    for k, v in {**ann, **(meta.get("labels") or {})}.items():
        problems.expect(isinstance(v, str), where, f"metadata label/annotation {k} must be a string")

    spec = obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("predictor"), dict):
        problems.add(where, "spec.predictor is required")
        return
    problems.expect(set(spec) <= KSERVE_SPEC_KEYS, where, f"unknown spec fields {sorted(set(spec) - KSERVE_SPEC_KEYS)}")
    pred = spec["predictor"]
    frameworks = set(pred) & KSERVE_FRAMEWORK_KEYS
    problems.expect(not frameworks, where,
                    f"spec.predictor has framework field(s) {sorted(frameworks)}: a custom predictor has containers only")
    mn, mx = pred.get("minReplicas"), pred.get("maxReplicas")
    problems.expect(isinstance(mn, int) and isinstance(mx, int) and 1 <= mn <= mx, where,
                    f"spec.predictor minReplicas/maxReplicas should be integers with 1 <= min <= max (found {mn}, {mx})")
    for key in ("labels", "annotations"):
        m = pred.get(key, {})
        problems.expect(isinstance(m, dict) and all(isinstance(v, str) for v in m.values()), where,
                        f"spec.predictor.{key} must map strings to strings")

    # The inlined PodSpec: everything that is not a KServe component field, validated as a core/v1 Pod.
    pod_spec = {k: v for k, v in pred.items() if k not in KSERVE_COMPONENT_KEYS | KSERVE_FRAMEWORK_KEYS}
    pod_meta = {"name": f"{values.name}-predictor", "labels": pred.get("labels", {}),
                "annotations": pred.get("annotations", {})}
    k8s_validate({"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}, version,
                 f"{where} (spec.predictor as a Pod)", problems)
    check_pod(pod_meta, pod_spec, KSERVE_CONTAINER, values, initdata, where, problems)
    env = {e.get("name"): e.get("value") for e in ((pod_spec.get("containers") or [{}])[0].get("env") or [])}
    problems.expect(env.get("PROTOCOL") == "v2", where,
                    "kserve-container should set env PROTOCOL=v2 (a custom predictor's protocol version)")


def check_dir(out: Path, values: render.Values, initdata: bytes, version: str, problems: Problems) -> int:
    """Validate one rendered directory; returns the number of manifests checked."""
    kust_path = out / "kustomization.yaml"
    if not kust_path.is_file():
        problems.add(str(out), "kustomization.yaml is missing")
        return 0
    kust = yaml.safe_load(kust_path.read_text())
    problems.expect(kust.get("apiVersion") == "kustomize.config.k8s.io/v1beta1" and kust.get("kind") == "Kustomization",
                    str(kust_path), "not a kustomize.config.k8s.io/v1beta1 Kustomization")
    resources = kust.get("resources") or []
    on_disk = sorted(p.name for p in out.glob("*.yaml") if p.name != "kustomization.yaml")
    problems.expect(sorted(resources) == on_disk, str(kust_path),
                    f"resources {sorted(resources)} differ from the rendered files {on_disk}")
    expected = render.selected_templates(values)
    problems.expect(sorted(resources) == sorted(expected), str(kust_path),
                    f"resources {sorted(resources)} differ from what the values select {sorted(expected)}")

    objects: dict[str, dict] = {}
    for name in resources:
        path = out / name
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            problems.add(str(path), f"does not parse as YAML: {e}")
            continue
        if len(docs) != 1 or not isinstance(docs[0], dict):
            problems.add(str(path), f"expected one object (found {len(docs)} documents)")
            continue
        obj = docs[0]
        objects[obj.get("kind", name)] = obj
        where = f"{name} ({obj.get('kind')})"
        meta = obj.get("metadata") or {}
        problems.expect(meta.get("namespace") == values.namespace, where, "metadata.namespace differs from values")
        check_free_strings(obj, where, problems)
        if (obj.get("apiVersion"), obj.get("kind")) in BUILTIN_KINDS:
            k8s_validate(obj, version, where, problems)
        elif obj.get("kind") == "InferenceService":
            check_inferenceservice(obj, version, values, initdata, where, problems)
        else:
            problems.add(where, f"unexpected object {obj.get('apiVersion')}/{obj.get('kind')}")

    pod_labels: dict = {}
    if "ConfigMap" in objects:
        cm = objects["ConfigMap"]
        problems.expect(cm["metadata"].get("name") == f"{values.name}-initdata", "configmap.yaml",
                        f"name should be {values.name}-initdata")
        raw = (cm.get("binaryData") or {}).get(render.INITDATA_FILE)
        try:
            same = raw is not None and base64.b64decode(raw, validate=True) == initdata
        except ValueError:
            same = False
        problems.expect(same and not cm.get("data"), "configmap.yaml",
                        f"binaryData.{render.INITDATA_FILE} should hold the initdata document's exact bytes, and nothing else")
    if "Deployment" in objects:
        d = objects["Deployment"]
        tmpl = d["spec"]["template"]
        pod_labels = tmpl["metadata"].get("labels", {})
        check_pod(tmpl["metadata"], tmpl["spec"], "enclave", values, initdata, "deployment.yaml", problems)
        sel = d["spec"]["selector"]["matchLabels"]
        problems.expect(sel.items() <= pod_labels.items(), "deployment.yaml", "selector does not match the pod labels")
        problems.expect(d["spec"].get("replicas") == values.replicas, "deployment.yaml", "replicas differ from values")
    if "InferenceService" in objects:
        pod_labels = objects["InferenceService"]["spec"]["predictor"].get("labels", {})
    if "Service" in objects:
        s = objects["Service"]["spec"]
        problems.expect(s.get("type") == "ClusterIP", "service.yaml", "type should be ClusterIP")
        problems.expect(s.get("ports") == [{"name": "oip-tls", "protocol": "TCP", "port": 443, "targetPort": "oip-tls"}],
                        "service.yaml", "should expose port 443 -> targetPort oip-tls")
        problems.expect(s.get("selector", {}).items() <= pod_labels.items(), "service.yaml",
                        "selector does not match the pod labels")
    if "HorizontalPodAutoscaler" in objects:
        h = objects["HorizontalPodAutoscaler"]["spec"]
        target = f"{values.name}-predictor" if values.kserve_enabled else values.name
        problems.expect(h["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                        "hpa.yaml", f"scaleTargetRef should be the Deployment {target}")
        problems.expect(h.get("minReplicas") == values.hpa_min and h.get("maxReplicas") == values.hpa_max,
                        "hpa.yaml", "min/max replicas differ from values")
        m = h.get("metrics") or [{}]
        problems.expect(m[0].get("type") == "Pods" and
                        m[0].get("pods", {}).get("metric", {}).get("name") == "cloister_enclave_requests_per_second",
                        "hpa.yaml", "should scale on the Pods metric cloister_enclave_requests_per_second")
        target = m[0].get("pods", {}).get("target", {})
        problems.expect(target == {"type": "AverageValue", "averageValue": values.hpa_target}, "hpa.yaml",
                        f"target should be AverageValue {values.hpa_target!r} (found {target})")
    if "NetworkPolicy" in objects:
        n = objects["NetworkPolicy"]["spec"]
        problems.expect(n["podSelector"]["matchLabels"].items() <= pod_labels.items(), "networkpolicy.yaml",
                        "podSelector does not match the pod labels")
        problems.expect(n.get("policyTypes") == ["Ingress", "Egress"], "networkpolicy.yaml",
                        "policyTypes should be Ingress and Egress")
        problems.expect(n.get("ingress") == [{"ports": [{"protocol": "TCP", "port": 8443}]}], "networkpolicy.yaml",
                        "ingress should allow TCP 8443 only")
        blocks = {(r["to"][0].get("ipBlock", {}).get("cidr"), r["ports"][0]["port"]) for r in n.get("egress", [])
                  if "ipBlock" in r["to"][0]}
        want = {(values.key_broker_cidr, values.key_broker_port), (values.blob_store_cidr, values.blob_store_port)}
        if values.registry_cidr:
            want.add((values.registry_cidr, values.registry_port))
        problems.expect(blocks == want, "networkpolicy.yaml", f"egress ipBlocks {sorted(blocks)} should be {sorted(want)}")
        dns = [r for r in n.get("egress", []) if "namespaceSelector" in r["to"][0]]
        problems.expect(
            len(dns) == 1
            and dns[0]["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]
            and sorted((p["protocol"], p["port"]) for p in dns[0]["ports"]) == [("TCP", 53), ("UDP", 53)],
            "networkpolicy.yaml", "egress should allow DNS (UDP and TCP 53) to kube-system, and nothing else by selector")
        problems.expect(len(n.get("egress", [])) == len(want) + 1, "networkpolicy.yaml",
                        f"egress should have {len(want) + 1} rules (found {len(n.get('egress', []))})")

    kubectl = shutil.which("kubectl")
    if kubectl:
        r = subprocess.run([kubectl, "kustomize", str(out)], capture_output=True, text=True)
        if r.returncode != 0:
            problems.add(str(kust_path), f"`kubectl kustomize` failed: {r.stderr.strip()}")
        else:
            built = [d for d in yaml.safe_load_all(r.stdout) if d]
            problems.expect(len(built) == len(resources), str(kust_path),
                            f"`kubectl kustomize` built {len(built)} objects, expected {len(resources)}")
    return len(resources)


def run_check(values_path: Path, initdata_path: Path | None, version: str, problems: Problems) -> tuple[int, list[str]]:
    """Render both variants and validate them. Returns (manifests checked, notes)."""
    notes: list[str] = []
    total = 0
    with tempfile.TemporaryDirectory(prefix="cloister-k8s-") as tmp:
        # The committed values, through the command line exactly as a user runs it.
        out = Path(tmp) / "as-given"
        r = render_cli(values_path, out, initdata_path)
        if r.returncode != 0:
            problems.add("render.py", f"exit status {r.returncode}: {r.stderr.strip()}")
            return 0, notes
        values, idpath, data = render.prepare(values_path, initdata_path)
        notes += [f"warning: {w}" for w in values.warnings]
        n = check_dir(out, values, data, version, problems)
        total += n
        variant = "KServe InferenceService" if values.kserve_enabled else "Deployment + Service"
        cm = " + initdata ConfigMap" if values.initdata_configmap else ""
        notes.append(f"{variant}{cm} (as in {values_path.name}): {n} manifests")

        # The other variants, through the module: KServe flipped, and the initdata ConfigMap flipped.
        for label, flip in (
            ("kserve.enabled flipped", {"kserve": {"enabled": not values.kserve_enabled}}),
            ("initdata_configmap flipped", {"initdata_configmap": not values.initdata_configmap}),
        ):
            other = Path(tmp) / label.split()[0]
            try:
                ovalues = render_api(values_path, other, initdata_path, flip)
            except render.InputError as e:
                problems.add(f"render.py ({label})", str(e))
                continue
            n = check_dir(other, ovalues, data, version, problems)
            total += n
            variant = "KServe InferenceService" if ovalues.kserve_enabled else "Deployment + Service"
            cm = " + initdata ConfigMap" if ovalues.initdata_configmap else ""
            notes.append(f"{variant}{cm} ({label}): {n} manifests")
        if shutil.which("kubectl") is None:
            notes.append("kubectl not installed: `kubectl kustomize` not tried")
    return total, notes


# --------------------------------------------------------------------------------------------------
# Self-test


def toml_dump(doc: dict) -> str:
    """Enough TOML for values files: scalars, tables, arrays of tables."""
    def scalar(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        raise TypeError(type(v))

    lines: list[str] = []
    for k, v in doc.items():
        if not isinstance(v, (dict, list)):
            lines.append(f"{k} = {scalar(v)}")
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {scalar(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list):
            for item in v:
                lines.append(f"\n[[{k}]]")
                lines += [f"{kk} = {scalar(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"


def self_test(values_path: Path, version: str) -> tuple[int, int]:
    base = tomllib.loads(values_path.read_text())
    base["initdata"] = str((values_path.parent / base["initdata"]).resolve())
    initdata_bytes = Path(base["initdata"]).read_bytes()
    passed = failed = 0

    def report(ok: bool, name: str, detail: str = "") -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"  ok    {name}")
        else:
            failed += 1
            print(f"  FAIL  {name}{': ' + detail if detail else ''}")

    with tempfile.TemporaryDirectory(prefix="cloister-k8s-selftest-") as tmp:
        tmpd = Path(tmp)

        def run(mutate, initdata_text: str | None = None):
            doc = copy.deepcopy(base)
            mutate(doc)
            if initdata_text is not None:
                p = tmpd / "initdata.toml"
                p.write_text(initdata_text)
                doc["initdata"] = str(p)
            vp = tmpd / "values.toml"
            vp.write_text(toml_dump(doc))
            out = tmpd / "out"
            shutil.rmtree(out, ignore_errors=True)
            return render_cli(vp, out), out

        def refused(name: str, mutate, needle: str, initdata_text: str | None = None) -> None:
            r, out = run(mutate, initdata_text)
            ok = r.returncode == 2 and needle in r.stderr and not (out / "kustomization.yaml").exists()
            report(ok, f"refuses {name}", f"exit {r.returncode}, stderr: {r.stderr.strip()!r}")

        def setk(path: str, value):
            def f(doc):
                *parents, last = path.split(".")
                t = doc
                for p in parents:
                    t = t[int(p)] if isinstance(t, list) else t[p]
                t[last] = value
            return f

        def delk(path: str):
            def f(doc):
                *parents, last = path.split(".")
                t = doc
                for p in parents:
                    t = t[p]
                del t[last]
            return f

        # The faithful round trip first: the dumped base renders.
        r, out = run(lambda d: None)
        report(r.returncode == 0, "renders the committed values re-serialized", r.stderr.strip())

        r, out = run(delk("image_registry"))
        report(r.returncode == 0 and "203.0.113.128" not in (out / "networkpolicy.yaml").read_text(),
               "renders without [image_registry] (no registry egress rule)", r.stderr.strip())
        r, out = run(setk("hpa.enabled", False))
        report(r.returncode == 0 and not (out / "hpa.yaml").exists()
               and "hpa.yaml" not in (out / "kustomization.yaml").read_text(),
               "renders without the HPA when hpa.enabled = false", r.stderr.strip())
        r, out = run(setk("initdata_configmap", True))
        report(r.returncode == 0 and (out / "configmap.yaml").exists()
               and "--config-from-initdata=/etc/cloister/initdata/initdata.toml" in (out / "deployment.yaml").read_text(),
               "renders the initdata ConfigMap and mounts it when initdata_configmap = true", r.stderr.strip())
        r, out = run(setk("kserve.enabled", True))
        report(r.returncode == 0 and sorted(p.name for p in out.glob("*.yaml")) ==
               sorted(["hpa.yaml", "inferenceservice.yaml", "kustomization.yaml", "networkpolicy.yaml"]
                      + ["configmap.yaml"]),
               "renders the KServe variant from the command line", r.stderr.strip())

        refused("an image by tag", setk("image", "registry.example.com/cloister/cloister-enclave:0.1.0"),
                "not pinned by digest")
        refused("an image without tag or digest", setk("image", "cloister-enclave"), "not pinned by digest")
        refused("an image with tag and digest",
                setk("image", "registry.example.com/cloister-enclave:0.1.0@sha256:" + "ab" * 32), "drop the tag")
        refused("an image with a short digest", setk("image", "registry.example.com/cloister-enclave@sha256:abc"),
                "64 lowercase hex")
        refused("a model digest with uppercase hex", setk("models.0.digest", "sha384:" + "AB" * 48), "sha384:")
        refused("a sha256 model digest", setk("models.0.digest", "sha256:" + "ab" * 32), "sha384:")
        refused("a model digest of 95 hex digits", setk("models.0.digest", "sha384:" + "a" * 95), "sha384:")
        refused("hpa min_replicas > max_replicas",
                lambda d: (setk("hpa.min_replicas", 5)(d), setk("hpa.max_replicas", 3)(d), setk("replicas", 4)(d)),
                "greater than")
        refused("replicas = 0", setk("replicas", 0), "at least 1")
        refused("replicas outside the HPA bounds", setk("replicas", 99), "within")
        refused("a key broker address without a port", setk("key_broker.address", "keybroker.example.com"),
                "HOST:PORT")
        refused("a key broker port above 65535", setk("key_broker.address", "keybroker.example.com:70000"), "port")
        refused("a CIDR with host bits", setk("blob_store.cidr", "198.51.100.7/24"), "did you mean")
        refused("a blob store outside its CIDR", setk("blob_store.cidr", "192.0.2.0/24"), "outside")
        refused("a blob store port that is not blobs_url's", setk("blob_store.port", 9999), "differs")
        refused("blobs_url with another scheme", setk("blobs_url", "ftp://blobs.example.com:80"), "must be http:// or https://")
        refused("blobs_url with a query", setk("blobs_url", "http://blobs.example.com:80/x?y=1"), "query")
        refused("a name that is not a DNS-1035 label", setk("name", "Cloister_Magika"), "DNS-1035")
        refused("an unknown key", setk("replica", 2), "unknown key")
        refused("a missing key", delk("cpu"), "`cpu` is required")
        refused("a zero CPU", setk("cpu", "0"), "positive CPU")
        refused("a Knative deployment mode", setk("kserve.deployment_mode", "Serverless"), "deployment_mode")
        refused("a missing initdata file", setk("initdata", str(tmpd / "nope.toml")), "does not exist")
        text = initdata_bytes.decode()
        refused("an initdata whose model digest differs from the values",
                lambda d: None, "models differ",
                initdata_text=text.replace("sha384:4738", "sha384:0738"))
        refused("an initdata whose key broker differs from the values",
                lambda d: None, "key_broker.address",
                initdata_text=text.replace("keybroker.example.com:7443", "evil.example.com:7443"))
        refused("an initdata of another version", lambda d: None, "version",
                initdata_text=text.replace('version = "0.1.0"', 'version = "0.2.0"'))
        refused("an initdata that is not a CoCo document", lambda d: None, "algorithm",
                initdata_text='version = "0.1.0"\n[data]\nx = "y"\n')

        # A template that names a value the renderer does not have.
        tdir = tmpd / "templates"
        shutil.copytree(render.TEMPLATES, tdir)
        (tdir / "service.yaml").write_text((tdir / "service.yaml").read_text() + "# ${no_such_value}\n")
        values, _, data = render.prepare(values_path, None)
        try:
            render.render(values, data, tdir)
            report(False, "refuses a template with an unknown ${variable}", "rendered anyway")
        except render.InputError as e:
            report("no_such_value" in str(e), "refuses a template with an unknown ${variable}", str(e))

        # Reproducible output and the annotation.
        a, b = tmpd / "a", tmpd / "b"
        render.write(render.render(values, data), a)
        render.write(render.render(values, data), b)
        same = all((a / n).read_bytes() == (b / n).read_bytes() for n in (p.name for p in a.iterdir()))
        report(same, "renders byte-identical output twice")
        ann = render.initdata_annotation(data)
        report(gzip.decompress(base64.b64decode(ann)) == data and base64.b64decode(ann)[4:8] == b"\0\0\0\0",
               "annotation = base64(gzip(bytes)) with gzip mtime 0")
        p = subprocess.run([sys.executable, str(HERE / "render.py"), "--values", str(values_path), "--print-annotation"],
                           capture_output=True, text=True)
        report(p.returncode == 0 and p.stdout.strip() == ann, "--print-annotation prints the same value")

        # The validators reject broken manifests.
        render.write(render.render(values, data), tmpd / "ok")
        dep = yaml.safe_load((tmpd / "ok" / "deployment.yaml").read_text()) if (tmpd / "ok" / "deployment.yaml").exists() else None
        if dep is not None:
            bad = copy.deepcopy(dep)
            bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
            pr = Problems()
            k8s_validate(bad, version, "deployment", pr)
            report(bool(pr.items), "schema validation rejects an unknown field (strict)")
            bad = copy.deepcopy(dep)
            bad["spec"]["replicas"] = "two"
            pr = Problems()
            k8s_validate(bad, version, "deployment", pr)
            report(bool(pr.items), "schema validation rejects a wrongly typed field")
        kvalues = render.load_values(values_path, {"kserve": {"enabled": True}})
        render.write(render.render(kvalues, data), tmpd / "ks")
        isvc = yaml.safe_load((tmpd / "ks" / "inferenceservice.yaml").read_text())
        pr = Problems()
        check_inferenceservice(isvc, version, kvalues, data, "isvc", pr)
        report(not pr.items, "the rendered InferenceService passes the structural check", "; ".join(pr.items))
        for label, mutate in (
            ("a framework field next to containers", lambda o: o["spec"]["predictor"].update(sklearn={})),
            ("an image by tag", lambda o: o["spec"]["predictor"]["containers"][0].update(image="x/y:1")),
            ("no PROTOCOL=v2", lambda o: o["spec"]["predictor"]["containers"][0].pop("env")),
            ("an unknown pod field", lambda o: o["spec"]["predictor"].update(runtimeClass="x")),
            ("min > max replicas", lambda o: o["spec"]["predictor"].update(minReplicas=9, maxReplicas=2)),
        ):
            bad = copy.deepcopy(isvc)
            mutate(bad)
            pr = Problems()
            check_inferenceservice(bad, version, kvalues, data, "isvc", pr)
            report(bool(pr.items), f"the InferenceService check rejects {label}")
        pr = Problems()
        check_free_strings({"ports": [{"protocol": "TCPX"}], "resources": {"limits": {"memory": "lots"}},
                            "target": {"averageValue": "twenty"}}, "x", pr)
        report(len(pr.items) == 3, "the checks reject a bad protocol and bad quantities", "; ".join(pr.items))
    return passed, failed


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=Path, default=HERE / "values.toml", help="values file (default: the committed one)")
    parser.add_argument("--initdata", type=Path, help="initdata document (default: the one the values name)")
    parser.add_argument("--kubernetes-version",
                        help="validate against this Kubernetes version (default: the newest kubernetes-validate ships)")
    parser.add_argument("--self-test", action="store_true", help="also check that bad input and bad manifests are refused")
    args = parser.parse_args(argv)

    latest = kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version())
    version = kubernetes_validate.utils.major_minor(args.kubernetes_version or latest)
    if not re.fullmatch(r"[0-9]+\.[0-9]+", version):
        parser.error(f"--kubernetes-version must be X.Y (found {args.kubernetes_version!r})")
    if tuple(map(int, version.split("."))) > tuple(map(int, latest.split("."))):
        print(f"check.py: the installed kubernetes-validate has schemas up to Kubernetes {latest}, not {version}",
              file=sys.stderr)
        return 2

    problems = Problems()
    try:
        total, notes = run_check(args.values, args.initdata, version, problems)
    except render.InputError as e:
        print(f"check.py: {e}", file=sys.stderr)
        return 1
    for n in notes:
        print(f"  {n}")
    status = 0
    if problems.items:
        for p in problems.items:
            print(f"check.py: {p}", file=sys.stderr)
        print(f"{len(problems.items)} problem(s) in {total} manifests (kubernetes {version})", file=sys.stderr)
        status = 1
    else:
        print(f"{total} manifests valid (kubernetes {version})")

    if args.self_test:
        print("self-test:")
        passed, failed = self_test(args.values, version)
        print(f"{passed} passed, {failed} failed")
        if failed:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
