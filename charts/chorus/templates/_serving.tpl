{{/* What every serving container shares, in both modes: environment, writable volumes, storage. */}}

{{- define "chorus.serving.env" -}}
# A read-only root: Ray and Python write only under /tmp (an emptyDir).
- name: HOME
  value: /tmp
- name: RAY_TMPDIR
  value: /tmp/ray
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
{{- include "chorus.storageEnv" . }}
{{- with .Values.serving.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "chorus.serving.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: dshm
  mountPath: /dev/shm
{{- with include "chorus.storage.path" . }}
- name: storage
  mountPath: {{ . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "chorus.serving.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.serving.tmpSize }}
# Ray's object store: /dev/shm is 64 MiB in a container unless a memory volume replaces it.
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.serving.shmSize }}
{{- if include "chorus.storage.path" . }}
- name: storage
  persistentVolumeClaim:
    claimName: {{ include "chorus.storage.claimName" . }}
    readOnly: true
{{- end }}
{{- end -}}

{{/* The HTTP API's probes: /healthz (the ingress is up) and /readyz (the base model can synthesise). */}}
{{- define "chorus.serving.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: {{ div .Values.serving.startupTimeoutSeconds 5 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 15
  timeoutSeconds: 5
  failureThreshold: 4
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 6
  failureThreshold: 2
{{- end -}}

{{- define "chorus.serving.podSpecCommon" -}}
serviceAccountName: {{ include "chorus.serving.name" . }}
automountServiceAccountToken: true
securityContext:
  {{- include "chorus.podSecurityContext" . | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .Values.serving.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serving.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
