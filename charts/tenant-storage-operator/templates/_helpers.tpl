{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "tso.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart name unless it already contains it. */}}
{{- define "tso.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tso.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tso.labels" -}}
helm.sh/chart: {{ include "tso.chart" . }}
{{ include "tso.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "tso.serviceAccountName" -}}
{{- default (include "tso.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "tso.leaseName" -}}
{{- default (include "tso.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "tso.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{- define "tso.clusterId" -}}
{{- required "clusterId is required: set a stable, unique id for this cluster, e.g. --set clusterId=prod-eu-1 (it is part of every bucket name and ownership tag; never change it)" .Values.clusterId }}
{{- end }}

{{/* Checks of values that would otherwise only fail when the pod starts. */}}
{{- define "tso.validate" -}}
{{- if not (has .Values.logFormat (list "json" "text")) }}
{{- fail (printf "logFormat must be json or text, not %q" (toString .Values.logFormat)) }}
{{- end }}
{{- if and .Values.aws.caBundle.configMapName .Values.aws.caBundle.secretName }}
{{- fail "aws.caBundle: set configMapName or secretName, not both" }}
{{- end }}
{{- if and .Values.image.digest (not (hasPrefix "sha256:" .Values.image.digest)) }}
{{- fail (printf "image.digest must look like sha256:<hex>, not %q" .Values.image.digest) }}
{{- end }}
{{- end }}
