{{/* Names, labels and the values several templates share. */}}

{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berth.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "berth.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "berth.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "berth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: berth
{{- end }}

{{- define "berth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "berth.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "berth.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The served models as Berth's BERTH_MODELS value: NAME or NAME@VERSION, comma-separated. */}}
{{- define "berth.modelRefs" -}}
{{- $refs := list }}
{{- range .Values.models }}
{{- $refs = append $refs (ternary (printf "%s@%v" .name .version) .name (ne (toString (default "" .version)) "")) }}
{{- end }}
{{- join "," $refs }}
{{- end }}

{{/* SIGTERM to SIGKILL: Berth's grace period and drain timeout, plus a margin. */}}
{{- define "berth.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- $grace := default 0 .Values.config.shutdown_grace_s | float64 }}
{{- $timeout := default 30 .Values.config.shutdown_timeout_s | float64 }}
{{- add (ceil (addf $grace $timeout)) 5 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Environment of the Berth container (everything but the ConfigMap and Secrets). */}}
{{- define "berth.env" -}}
- name: BERTH_HOST
  value: "0.0.0.0"
- name: BERTH_PORT
  value: "8000"
{{- if .Values.service.grpcPort }}
- name: BERTH_GRPC_PORT
  value: "8001"
{{- end }}
- name: BERTH_MODELS
  value: {{ include "berth.modelRefs" . | quote }}
{{- with .Values.defaultModel }}
- name: BERTH_DEFAULT_MODEL
  value: {{ . | quote }}
{{- end }}
- name: BERTH_SERVE_ALIAS
  value: {{ .Values.registry.serveAlias | quote }}
{{- if .Values.registry.url }}
- name: BERTH_REGISTRY_URL
  value: {{ .Values.registry.url | quote }}
- name: BERTH_REGISTRY_CACHE
  value: /var/cache/berth
{{- end }}
{{- if .Values.apiKeys.existingSecret }}
- name: BERTH_API_KEYS_FILE
  value: /etc/berth/keys/keys.json
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
