{{/* Names, labels, images and the pod hardening every workload shares. */}}

{{- define "chorus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Object-name prefix: at most 40 characters, so "<prefix>-<component>-<suffix>" fits 63. */}}
{{- define "chorus.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "chorus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "serving"). */}}
{{- define "chorus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chorus.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every label of one component's objects: (dict "root" $ "component" "serving"). */}}
{{- define "chorus.labels" -}}
{{ include "chorus.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: chorus
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "chorus.chart" .root }}
{{- end -}}

{{/* "repository:tag" of a role's image: (dict "root" $ "role" "serve"|"train"|"operator"). */}}
{{- define "chorus.image" -}}
{{- $v := .root.Values -}}
{{- $img := index $v.image (eq .role "operator" | ternary "serve" .role) -}}
{{- $repo := $img.repository -}}
{{- $tag := $img.tag -}}
{{- if eq .role "operator" -}}
{{- $repo = $v.operator.image.repository | default $repo -}}
{{- $tag = $v.operator.image.tag | default $tag -}}
{{- end -}}
{{- printf "%s:%s" $repo ($tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{- define "chorus.imagePullPolicy" -}}
{{- $v := .root.Values -}}
{{- if eq .role "operator" -}}
{{- $v.operator.image.pullPolicy | default $v.image.serve.pullPolicy -}}
{{- else -}}
{{- (index $v.image .role).pullPolicy -}}
{{- end -}}
{{- end -}}

{{- define "chorus.operator.name" -}}{{ include "chorus.fullname" . }}-operator{{- end -}}
{{- define "chorus.serving.name" -}}{{ include "chorus.fullname" . }}-serving{{- end -}}

{{/* The Service the speech API is reached through: the chart's own, or KubeRay's serve Service. */}}
{{- define "chorus.serving.serviceName" -}}
{{- if eq .Values.serving.mode "rayservice" -}}
{{ include "chorus.serving.name" . }}-serve-svc
{{- else -}}
{{ include "chorus.serving.name" . }}
{{- end -}}
{{- end -}}

{{/* The RayService head's dashboard (job submission), for the `ray` training backend. */}}
{{- define "chorus.ray.dashboardUrl" -}}
{{- printf "http://%s-head-svc.%s.svc:8265" (include "chorus.serving.name" .) .Release.Namespace -}}
{{- end -}}

{{- define "chorus.storage.claimName" -}}
{{- .Values.storage.pvc.existingClaim | default (printf "%s-storage" (include "chorus.fullname" .)) -}}
{{- end -}}

{{/* Pod-level hardening: non-root uid 10001, RuntimeDefault seccomp. */}}
{{- define "chorus.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level hardening: read-only root, no privilege escalation, no capabilities. */}}
{{- define "chorus.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The storage environment shared by serving and the operator (S3 endpoint, region, credentials). */}}
{{- define "chorus.storageEnv" -}}
{{- $s3 := .Values.storage.s3 -}}
{{- if $s3.endpoint }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ $s3.endpoint | quote }}
{{- end }}
{{- if $s3.region }}
- name: AWS_DEFAULT_REGION
  value: {{ $s3.region | quote }}
{{- end }}
{{- if $s3.credentialsSecret }}
{{- range list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $s3.credentialsSecret }}
      key: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The file:// storage path, or "" for other URIs. */}}
{{- define "chorus.storage.path" -}}
{{- if hasPrefix "file://" .Values.storage.uri -}}
{{- trimPrefix "file://" .Values.storage.uri -}}
{{- end -}}
{{- end -}}

{{/* Fail on combinations the schema cannot express, naming the keys. */}}
{{- define "chorus.validate" -}}
{{- $v := .Values -}}
{{- if and (hasPrefix "file://" $v.storage.uri) (not $v.storage.pvc.enabled) -}}
{{- fail (printf "storage.uri is %s (file://) but storage.pvc.enabled is false: enable storage.pvc (or use s3://)" $v.storage.uri) -}}
{{- end -}}
{{- if and $v.storage.pvc.enabled (not (hasPrefix "file://" $v.storage.uri)) -}}
{{- fail (printf "storage.pvc.enabled is true but storage.uri %q is not a file:// URI: the claim is mounted at the file:// path" $v.storage.uri) -}}
{{- end -}}
{{- if and (or $v.storage.s3.endpoint $v.storage.s3.credentialsSecret) (not (hasPrefix "s3://" $v.storage.uri)) -}}
{{- fail (printf "storage.s3 is set but storage.uri %q is not an s3:// URI" $v.storage.uri) -}}
{{- end -}}
{{- if and $v.serving.autoscaling.enabled (gt (int $v.serving.autoscaling.minReplicas) (int $v.serving.autoscaling.maxReplicas)) -}}
{{- fail (printf "serving.autoscaling.minReplicas (%d) must not exceed serving.autoscaling.maxReplicas (%d)" (int $v.serving.autoscaling.minReplicas) (int $v.serving.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- $w := $v.serving.rayService.workers -}}
{{- if not (and (le (int $w.minReplicas) (int $w.replicas)) (le (int $w.replicas) (int $w.maxReplicas))) -}}
{{- fail (printf "serving.rayService.workers: need minReplicas (%d) <= replicas (%d) <= maxReplicas (%d)" (int $w.minReplicas) (int $w.replicas) (int $w.maxReplicas)) -}}
{{- end -}}
{{- if and (eq $v.training.backend "ray") (not (and $v.serving.enabled (eq $v.serving.mode "rayservice"))) -}}
{{- fail "training.backend is ray but serving.mode is not rayservice: Ray training jobs are submitted to the RayService's cluster (deployment-mode pods each run a private Ray without a dashboard)" -}}
{{- end -}}
{{- end -}}
