{{- define "chorus.test.name" -}}{{ include "chorus.fullname" . }}-helm-test{{- end -}}
{{/* The throwaway tenant of `helm test`: named like the test pod, because `helm test --logs` asks for a pod's
log under the name of every test hook, whatever its kind (a differently named VoiceTenant hook makes it fail
after the test passed). A DNS label of at most 56 characters starting with a letter. */}}
{{- define "chorus.test.tenant" -}}
{{- include "chorus.test.name" . | trunc 56 | trimSuffix "-" -}}
{{- end -}}
