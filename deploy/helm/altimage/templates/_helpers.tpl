{{- /* Named templates shared by the altimage chart's manifests: names, labels, image, secrets. */ -}}

{{- define "altimage.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* The release name alone when it already contains the chart name, so names do not stutter. */ -}}
{{- define "altimage.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "altimage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "altimage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "altimage.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "altimage.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- /* Image tag: explicit, or the app version with the variant the Dockerfiles build. */ -}}
{{- define "altimage.image" -}}
{{- $variant := ternary "gpu" "cpu" .Values.gpu.enabled -}}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion $variant) -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{- /* Secret with admin-token and stripe-secret-key: the operator's, or the chart's own. */ -}}
{{- define "altimage.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "altimage.fullname" .) -}}
{{- end -}}

{{- /* Secret with the PostgreSQL URL, and its key. */ -}}
{{- define "altimage.databaseSecretName" -}}
{{- if .Values.database.url -}}
{{- include "altimage.fullname" . -}}
{{- else if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else -}}
{{- fail "altimage needs PostgreSQL on Kubernetes: set database.url or database.existingSecret" -}}
{{- end -}}
{{- end -}}

{{- define "altimage.databaseSecretKey" -}}
{{- ternary "database-url" .Values.database.existingSecretKey (not (empty .Values.database.url)) -}}
{{- end -}}

{{- /* The chart makes its own Secret when it has anything to keep in it. */ -}}
{{- define "altimage.ownsSecret" -}}
{{- if or (not .Values.secrets.existingSecret) .Values.database.url -}}true{{- end -}}
{{- end -}}

{{- /* Seconds from the kill signal to SIGKILL: preStop sleep, the drain, the server's 2 s hard stop, slack. */ -}}
{{- define "altimage.terminationGracePeriodSeconds" -}}
{{- add .Values.lifecycle.preStopSleepSeconds .Values.server.shutdownTimeoutSecs 2 .Values.lifecycle.terminationGraceMarginSeconds -}}
{{- end -}}
