"""Pure builders: a VoiceTenant's spec in, the Kubernetes objects it needs out, as plain dicts.

Nothing here talks to the API server. Every object carries the app.kubernetes.io/* labels, the
`chorus.dev/tenant` label (how the operator finds and watches its children) and an ownerReference
to the cluster-scoped VoiceTenant, so garbage collection removes it even if the operator is gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from chorus.operator.spec import NAMESPACE_PREFIX, TenantSpec

GROUP = "chorus.dev"
VERSION = "v1alpha1"
KIND = "VoiceTenant"
PLURAL = "voicetenants"
API_VERSION = f"{GROUP}/{VERSION}"

TENANT_LABEL = "chorus.dev/tenant"  # value: the tenant's name
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY = "chorus-operator"
MANAGED_BY_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"

QUOTA_NAME = "chorus-quota"
LIMIT_RANGE_NAME = "chorus-limits"
NETWORK_POLICY_NAME = "chorus-ingress"
ROLE_NAME = "chorus-tenant-owner"
ROLE_BINDING_NAME = "chorus-tenant-owners"
KEY_SECRET_NAME = "chorus-api-key"
KEY_SECRET_FIELD = "apiKey"
RECORD_PREFIX = "tenant-"  # the record ConfigMap in the platform namespace: tenant-<name>


@dataclass(frozen=True)
class TenantRef:
    """The identity of a VoiceTenant object: what owner references point at."""

    name: str
    uid: str

    @property
    def namespace(self) -> str:
        """The tenant's namespace."""
        return namespace_name(self.name)


def namespace_name(tenant: str) -> str:
    """The namespace of a tenant: 'tenant-<name>'."""
    return NAMESPACE_PREFIX + tenant


def record_name(tenant: str) -> str:
    """The name of a tenant's record ConfigMap in the platform namespace."""
    return RECORD_PREFIX + tenant


def labels(tenant: str, component: str) -> dict[str, str]:
    """The labels every child object of a tenant carries."""
    return {
        "app.kubernetes.io/name": "chorus",
        "app.kubernetes.io/part-of": "chorus",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        COMPONENT_LABEL: component,
        TENANT_LABEL: tenant,
    }


def owner_reference(tenant: TenantRef) -> dict:
    """An ownerReference to the VoiceTenant (a cluster-scoped owner may own namespaced objects)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": tenant.name,
        "uid": tenant.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(tenant: TenantRef, name: str, component: str, namespace: str | None = None) -> dict:
    meta = {
        "name": name,
        "labels": labels(tenant.name, component),
        "ownerReferences": [owner_reference(tenant)],
    }
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def build_namespace(tenant: TenantRef) -> dict:
    """The tenant's namespace, with the restricted Pod Security Standard enforced."""
    meta = _meta(tenant, tenant.namespace, "tenant-namespace")
    meta["labels"].update({
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    })
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def build_resource_quota(tenant: TenantRef, spec: TenantSpec) -> dict:
    """ResourceQuota: the tenant's hard totals for CPU, memory, storage and pods."""
    q = spec.quota
    hard = {
        "requests.cpu": q.cpu, "limits.cpu": q.cpu,
        "requests.memory": q.memory, "limits.memory": q.memory,
        "requests.storage": q.storage,
        "pods": str(q.pods),
    }
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": _meta(tenant, QUOTA_NAME, "quota", tenant.namespace), "spec": {"hard": hard}}


def build_limit_range(tenant: TenantRef, spec: TenantSpec) -> dict:
    """LimitRange: default request and limit for containers that set none, and a per-container maximum."""
    lim = spec.limits
    item = {
        "type": "Container",
        "default": {"cpu": lim.default.cpu, "memory": lim.default.memory},
        "defaultRequest": {"cpu": lim.default_request.cpu, "memory": lim.default_request.memory},
        "max": {"cpu": lim.max.cpu, "memory": lim.max.memory},
    }
    return {"apiVersion": "v1", "kind": "LimitRange",
            "metadata": _meta(tenant, LIMIT_RANGE_NAME, "limits", tenant.namespace), "spec": {"limits": [item]}}


def build_network_policy(tenant: TenantRef, platform_namespace: str) -> dict:
    """NetworkPolicy: deny all ingress to the tenant's pods except from the platform namespace.

    The platform namespace is matched by `kubernetes.io/metadata.name`, which the API server sets
    from the namespace's name and nobody can change, rather than by a label anyone who may label
    namespaces could add to their own.
    """
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": platform_namespace}}}
    spec = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [peer]}]}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(tenant, NETWORK_POLICY_NAME, "network-policy", tenant.namespace), "spec": spec}


def build_role(tenant: TenantRef) -> dict:
    """Role for owners: read what runs in the namespace; read or delete (to rotate) the API-key Secret only."""
    read = ["get", "list", "watch"]
    rules = [
        {"apiGroups": [""], "verbs": read,
         "resources": ["pods", "pods/log", "services", "configmaps", "events", "resourcequotas",
                       "limitranges", "persistentvolumeclaims"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": read},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
        # resourceNames cannot restrict list/watch, so owners get no list on secrets at all.
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [KEY_SECRET_NAME],
         "verbs": ["get", "delete"]},
    ]
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": _meta(tenant, ROLE_NAME, "rbac", tenant.namespace), "rules": rules}


def build_role_binding(tenant: TenantRef, spec: TenantSpec) -> dict:
    """RoleBinding of the owner Role to every owner in the spec."""
    subjects = []
    for owner in spec.owners:
        subject = {"kind": owner.kind, "name": owner.name}
        if owner.kind == "ServiceAccount":
            subject["namespace"] = owner.namespace
        else:
            subject["apiGroup"] = "rbac.authorization.k8s.io"
        subjects.append(subject)
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": _meta(tenant, ROLE_BINDING_NAME, "rbac", tenant.namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE_NAME},
            "subjects": subjects}


def build_api_key_secret(tenant: TenantRef, key: str) -> dict:
    """The Secret that shows the tenant its API key; created once, never patched."""
    meta = _meta(tenant, KEY_SECRET_NAME, "api-key", tenant.namespace)
    meta["annotations"] = {"chorus.dev/usage": "Send as 'Authorization: Bearer <apiKey>'. Delete this Secret to "
                                               "rotate the key; the operator issues a new one."}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
            "stringData": {KEY_SECRET_FIELD: key}}


def build_tenant_record(tenant: TenantRef, spec: TenantSpec, key_sha256: str, voices: list[dict],
                        platform_namespace: str) -> dict:
    """The ConfigMap in the platform namespace that the serving tier reads for this tenant.

    It holds the API key's sha256 (never the key: a hash of 256 random bits cannot be reversed,
    so it is not secret material), the API limits and the voices with their adapter URIs. The
    serving tier watches ConfigMaps labelled app.kubernetes.io/component=tenant-record.
    """
    # A voice serves its servingVersion whatever its state says about newer work (a version in
    # training, or one that failed its gate, leaves the serving one alone).
    servable = [
        {"name": s["name"], "state": "Ready", "adapterUri": s["adapterUri"], "version": s["servingVersion"]}
        if s.get("servingVersion") and s.get("adapterUri") else {"name": s["name"], "state": s["state"]}
        for s in voices
    ]
    languages = {v.name: v.language for v in spec.voices}
    for entry in servable:
        entry["language"] = languages.get(entry["name"], "en-us")
    data = {
        "tenant": tenant.name,
        "namespace": tenant.namespace,
        "apiKeySha256": key_sha256,
        "requestsPerMinute": str(spec.api.requests_per_minute),
        "maxConcurrent": str(spec.api.max_concurrent),
        "maxCharsPerRequest": str(spec.api.max_chars_per_request),
        "voices.json": json.dumps(servable, sort_keys=True, separators=(",", ":")),
    }
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(tenant, record_name(tenant.name), "tenant-record", platform_namespace),
            "data": data}


def build_children(tenant: TenantRef, spec: TenantSpec, platform_namespace: str) -> list[dict]:
    """Every object inside the tenant's namespace that is applied as desired state (not the key)."""
    return [
        build_resource_quota(tenant, spec),
        build_limit_range(tenant, spec),
        build_network_policy(tenant, platform_namespace),
        build_role(tenant),
        build_role_binding(tenant, spec),
    ]
