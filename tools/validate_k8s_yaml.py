#!/usr/bin/env python3
"""Validate every Kubernetes manifest in the docs' ```yaml blocks against Kubernetes' schema.

Each ```yaml block of the given Markdown files (default: docs/scale-out.md) is parsed; every
document in it with `apiVersion` and `kind` is checked with kubernetes-validate (PyPI), which
bundles the OpenAPI schemas of each Kubernetes release, in strict mode: an unknown or misspelt
field is an error, as `kubectl apply --validate=strict` would make it.

KubeRay's RayJob is a custom resource whose schema ships only with the KubeRay operator, not
with kubernetes-validate, so it is checked in two parts: the pod templates inside it (head and
worker groups) are validated strictly as core/v1 PodTemplateSpec against the Kubernetes
schema, and the RayJob's own fields only structurally, against the field names and types of
KubeRay's ray.io/v1 API written down here (no CEL rules, defaults or enums).

Exit status 0 when every manifest passes, 1 when one fails, 2 when kubernetes-validate is not
installed (the check did not run).

Example:
  python3 tools/validate_k8s_yaml.py                       # docs/scale-out.md
  python3 tools/validate_k8s_yaml.py docs/*.md --k8s-version 1.30
"""

import argparse
import re
import sys
from pathlib import Path

BLOCK = re.compile(r"^```yaml[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)

# KubeRay ray.io/v1 fields used by recipes, name -> type (dict: nested fields; [dict]: a list of
# those; "template": a PodTemplateSpec; "map": string -> string). Unknown names are errors.
RAY_START_PARAMS = "map"
HEAD_GROUP = {"rayStartParams": RAY_START_PARAMS, "template": "template", "serviceType": str,
              "enableIngress": bool, "headService": dict, "resources": "map", "labels": "map"}
WORKER_GROUP = {"groupName": str, "replicas": int, "minReplicas": int, "maxReplicas": int,
                "idleTimeoutSeconds": int, "rayStartParams": RAY_START_PARAMS, "template": "template",
                "suspend": bool, "numOfHosts": int, "resources": "map", "labels": "map", "scaleStrategy": dict}
CLUSTER_SPEC = {"rayVersion": str, "headGroupSpec": HEAD_GROUP, "workerGroupSpecs": [WORKER_GROUP],
                "enableInTreeAutoscaling": bool, "autoscalerOptions": dict, "headServiceAnnotations": "map",
                "suspend": bool, "gcsFaultToleranceOptions": dict}
RAYJOB_SPEC = {"entrypoint": str, "runtimeEnvYAML": str, "jobId": str, "submissionMode": str,
               "shutdownAfterJobFinishes": bool, "ttlSecondsAfterFinished": int, "activeDeadlineSeconds": int,
               "backoffLimit": int, "suspend": bool, "rayClusterSpec": CLUSTER_SPEC, "clusterSelector": "map",
               "submitterPodTemplate": "template", "submitterConfig": dict, "entrypointNumCpus": (int, float),
               "entrypointNumGpus": (int, float), "entrypointResources": str, "managedBy": str,
               "deletionStrategy": dict, "schedule": str}
REQUIRED = {"spec": ["entrypoint", "rayClusterSpec"], "spec.rayClusterSpec": ["headGroupSpec"],
            "spec.rayClusterSpec.headGroupSpec": ["template"],
            "spec.rayClusterSpec.workerGroupSpecs[]": ["groupName", "template"]}


def check_fields(value, shape, where, templates, errors):
    """Field names and types of `value` against `shape`; pod templates are collected for the
    Kubernetes schema."""
    if shape == "template":
        if not isinstance(value, dict):
            errors.append(f"{where}: a pod template must be a mapping")
        else:
            templates.append((where, value))
        return
    if shape == "map":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            errors.append(f"{where}: must map names to strings (quote numbers and booleans)")
        return
    if isinstance(shape, list):
        if not isinstance(value, list):
            errors.append(f"{where}: must be a list")
            return
        for i, item in enumerate(value):
            check_fields(item, shape[0], f"{where}[{i}]", templates, errors)
        return
    if isinstance(shape, dict) and shape is not dict:
        if not isinstance(value, dict):
            errors.append(f"{where}: must be a mapping")
            return
        for name in REQUIRED.get(re.sub(r"\[\d+\]", "[]", where), []):
            if name not in value:
                errors.append(f"{where}: missing {name}")
        for name, item in value.items():
            if name not in shape:
                errors.append(f"{where}.{name}: not a field of KubeRay's RayJob (known: {', '.join(sorted(shape))})")
            else:
                check_fields(item, shape[name], f"{where}.{name}", templates, errors)
        return
    expected = shape if isinstance(shape, tuple) else (shape,)
    if not isinstance(value, expected) or (bool not in expected and isinstance(value, bool)):
        errors.append(f"{where}: expected {' or '.join(t.__name__ for t in expected)}, got {type(value).__name__}")


def validate_rayjob(document, version, kv):
    errors, templates = [], []
    if document.get("apiVersion") != "ray.io/v1":
        errors.append(f"apiVersion is {document.get('apiVersion')}, expected ray.io/v1")
    for name in document:
        if name not in ("apiVersion", "kind", "metadata", "spec"):
            errors.append(f"{name}: not a top-level field of a RayJob")
    if not isinstance(document.get("metadata", {}).get("name"), str):
        errors.append("metadata.name is missing")
    check_fields(document.get("spec"), RAYJOB_SPEC, "spec", templates, errors)
    for where, template in templates:
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
        try:
            kv.validate(wrapped, version, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{where}.{'.'.join(str(p) for p in list(e.path)[1:])}: {e.message}")
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path,
                        default=[Path(__file__).resolve().parent.parent / "docs" / "scale-out.md"],
                        help="Markdown files (default: docs/scale-out.md)")
    parser.add_argument("--k8s-version", default=None, help="Kubernetes release to validate against (default: the newest kubernetes-validate knows)")
    args = parser.parse_args()
    try:
        import kubernetes_validate as kv
        import yaml
    except ImportError:
        print("validate_k8s_yaml: kubernetes-validate is not installed (pip install kubernetes-validate); nothing checked",
              file=sys.stderr)
        return 2
    version = args.k8s_version or kv.latest_version()
    failed = checked = 0
    for path in args.files:
        text = path.read_text(encoding="utf-8")
        for block in BLOCK.finditer(text):
            line = text.count("\n", 0, block.start()) + 2
            try:
                documents = [d for d in yaml.safe_load_all(block.group(1)) if d]
            except yaml.YAMLError as e:
                print(f"FAIL {path}:{line}: not YAML: {e}")
                failed += 1
                checked += 1
                continue
            for document in documents:
                if not isinstance(document, dict) or "kind" not in document or "apiVersion" not in document:
                    continue
                checked += 1
                name = f"{path}:{line} {document['kind']} {document.get('metadata', {}).get('name', '')}"
                if document["kind"] == "RayJob":
                    errors = validate_rayjob(document, version, kv)
                    how = f"pod templates against Kubernetes {version}, RayJob fields structurally"
                else:
                    try:
                        kv.validate(document, version, strict=True)
                        errors = []
                    except kv.ValidationError as e:
                        errors = [f"{'.'.join(str(p) for p in e.path)}: {e.message}"]
                    except kv.SchemaNotFoundError as e:
                        errors = [e.message]
                    how = f"Kubernetes {version} schema, strict"
                if errors:
                    failed += 1
                    print(f"FAIL {name}")
                    for error in errors:
                        print(f"  {error}")
                else:
                    print(f"ok   {name} ({how})")
    print(f"kubernetes manifests: {checked - failed} passed, {failed} failed")
    return 1 if failed or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
