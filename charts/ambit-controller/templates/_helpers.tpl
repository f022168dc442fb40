{{- define "ambit-controller.labels" -}}
app.kubernetes.io/name: ambit-controller
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ambit
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "ambit-controller.selectorLabels" -}}
app.kubernetes.io/name: ambit-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ambit-controller.image" -}}
{{ .image.repository }}:{{ .image.tag | default .appVersion }}
{{- end }}

{{- define "ambit-controller.rootNamespace" -}}
{{ .Values.rootNamespace | default .Release.Namespace }}
{{- end }}
