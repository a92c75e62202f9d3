{{/* The release's name for every object, cut to Kubernetes' 63 characters. */}}
{{- define "vigil.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vigil.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: "proxy" or "controller". */}}
{{- define "vigil.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vigil.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The proxy's config file: the operator's, then what the chart owns. */}}
{{- define "vigil.proxyConfig" -}}
# Written by the vigil Helm chart. rules digest: {{ toJson .Values.proxy.rules | sha256sum }}
{{ .Values.proxy.config }}
[server]
state_dir = "/var/lib/vigil"
watch_config = true
file_check_seconds = {{ .Values.proxy.fileCheckSeconds }}
grace_period_seconds = 5
graceful_shutdown_timeout_seconds = 15

[admin]
listen = "0.0.0.0:{{ .Values.proxy.ports.admin }}"

[[listeners]]
name = "http"
listen = "0.0.0.0:{{ .Values.proxy.ports.http }}"
forwarded_headers = {{ toJson .Values.proxy.forwardedHeaders }}
{{- if .Values.proxy.ports.https }}

[[listeners]]
name = "https"
listen = "0.0.0.0:{{ .Values.proxy.ports.https }}"
forwarded_headers = {{ toJson .Values.proxy.forwardedHeaders }}
http2 = true
{{- range .Values.proxy.tlsCertificates }}

[[listeners.certificates]]
cert = {{ .cert | quote }}
key = {{ .key | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The controller's config: the operator's, then listen and store. */}}
{{- define "vigil.controllerConfig" -}}
listen = "0.0.0.0:{{ .Values.controller.port }}"
store = "sqlite:///var/lib/vigil/controller.db"
{{ .Values.controller.config }}
{{- end -}}

{{/* Secret volumes and their mounts under /etc/vigil/secrets/<name>. */}}
{{- define "vigil.secretVolumes" -}}
{{- range . }}
- name: secret-{{ .name }}
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0400
{{- end }}
{{- end -}}
{{- define "vigil.secretMounts" -}}
{{- range . }}
- name: secret-{{ .name }}
  mountPath: /etc/vigil/secrets/{{ .name }}
  readOnly: true
{{- end }}
{{- end -}}
