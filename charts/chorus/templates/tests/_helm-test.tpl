{{- define "chorus.test.name" -}}{{ include "chorus.fullname" . }}-helm-test{{- end -}}
{{/* The throwaway tenant of `helm test`: a DNS label of at most 56 characters starting with a letter. */}}
{{- define "chorus.test.tenant" -}}
{{- printf "helm-test-%s" (.Release.Name | replace "." "-") | trunc 56 | trimSuffix "-" -}}
{{- end -}}
