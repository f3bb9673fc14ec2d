{{/*
Names, labels and small helpers shared by every template.
*/}}

{{- define "lbtrain.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: the release name, with the chart name appended unless it holds it. */}}
{{- define "lbtrain.fullname" -}}
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

{{- define "lbtrain.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lbtrain.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lbtrain.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lbtrain.labels" -}}
helm.sh/chart: {{ include "lbtrain.chart" . }}
{{ include "lbtrain.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lbtrain
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: (dict "ctx" $ "component" "webhook") */}}
{{- define "lbtrain.componentLabels" -}}
{{ include "lbtrain.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lbtrain.componentSelector" -}}
{{ include "lbtrain.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* ---- component names ------------------------------------------------------------------- */}}
{{- define "lbtrain.webhook.fullname" -}}{{ include "lbtrain.fullname" . }}-webhook{{- end -}}
{{- define "lbtrain.operator.fullname" -}}{{ include "lbtrain.fullname" . }}-operator{{- end -}}

{{- define "lbtrain.webhook.serviceAccountName" -}}
{{- if .Values.webhook.serviceAccount.create -}}
{{- default (include "lbtrain.webhook.fullname" .) .Values.webhook.serviceAccount.name -}}
{{- else -}}
{{- required "webhook.serviceAccount.name is required when webhook.serviceAccount.create=false" .Values.webhook.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lbtrain.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "lbtrain.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create=false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped object names must not collide between releases of different namespaces. */}}
{{- define "lbtrain.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "lbtrain.fullname" .) | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* ---- secrets ---------------------------------------------------------------------------- */}}
{{/* The Secret holding the HMAC secret Labelbox signs webhooks with. */}}
{{- define "lbtrain.webhook.secretName" -}}
{{- default (printf "%s-webhook-secret" (include "lbtrain.fullname" .)) .Values.webhook.secret.existingSecret -}}
{{- end -}}

{{- define "lbtrain.webhook.secretKey" -}}
{{- if .Values.webhook.secret.existingSecret -}}{{ .Values.webhook.secret.existingSecretKey }}{{- else -}}secret{{- end -}}
{{- end -}}

{{/* The Secret (key "api-key") holding the Labelbox API key: read by the operator, and by
     trainer pods in each watched namespace (the operator's --api-key-secret). */}}
{{- define "lbtrain.labelbox.secretName" -}}
{{- default (printf "%s-labelbox" (include "lbtrain.fullname" .)) .Values.labelbox.existingSecret -}}
{{- end -}}

{{/* ---- images ----------------------------------------------------------------------------- */}}
{{/* (dict "image" .Values.image "name" "lbtrain" "ctx" $): repository[:tag][@digest]. The
     repository defaults to <imageRegistry>/<name> (where `make push REGISTRY=...` put both
     images), the tag to appVersion (the tag `make push` gives them). */}}
{{- define "lbtrain.imageRef" -}}
{{- $repository := .image.repository -}}
{{- if not $repository -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" .ctx.Values.imageRegistry) .name -}}
{{- end -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" $repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* ---- namespaces ------------------------------------------------------------------------- */}}
{{/* The namespaces the operator watches, release namespace first (the webhook creates
     ModelRuns there, and the operator keeps its heartbeat Lease in the first one), as JSON. */}}
{{- define "lbtrain.watchNamespaces" -}}
{{- $list := list .Release.Namespace -}}
{{- range .Values.operator.watchNamespaces -}}
{{- $list = append $list . -}}
{{- end -}}
{{- $list | uniq | toJson -}}
{{- end -}}

{{/* The namespaces the chart prepares for runs (default TrainingTemplates, artifacts claim,
     Labelbox Secret), as JSON: every watched namespace, or only the release namespace when
     clusterWide (the chart cannot know every namespace; NOTES says what a run elsewhere needs). */}}
{{- define "lbtrain.runNamespaces" -}}
{{- if .Values.operator.clusterWide -}}
{{- list .Release.Namespace | toJson -}}
{{- else -}}
{{- include "lbtrain.watchNamespaces" . -}}
{{- end -}}
{{- end -}}

{{/* ---- checks run once per render --------------------------------------------------------- */}}
{{- define "lbtrain.validate" -}}
{{- if and (not .Values.labelbox.apiKey) (not .Values.labelbox.existingSecret) -}}
{{- fail "\n\nlbtrain needs a Labelbox API key: set labelbox.apiKey (e.g. --set labelbox.apiKey=$LABELBOX_API_KEY) or labelbox.existingSecret (a Secret with key \"api-key\" in each watched namespace).\nCreate the key in Labelbox under Workspace settings > API keys." -}}
{{- end -}}
{{- if and (not .Values.imageRegistry) (not (and .Values.image.repository .Values.trainingTemplates.defaults.image.repository)) -}}
{{- fail "\n\nlbtrain needs to know where its images are: set imageRegistry to the registry and path `make push REGISTRY=...` pushed them to (e.g. --set imageRegistry=registry.example.com/ml: the chart then runs <imageRegistry>/lbtrain and <imageRegistry>/lbtrain-trainer, tagged with the chart's appVersion), or set both image.repository and trainingTemplates.defaults.image.repository." -}}
{{- end -}}
{{- if and .Values.labelbox.apiKey .Values.labelbox.existingSecret -}}
{{- fail "\n\nset either labelbox.apiKey or labelbox.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.webhook.secret.value .Values.webhook.secret.existingSecret -}}
{{- fail "\n\nset either webhook.secret.value or webhook.secret.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.webhook.tls.enabled (not .Values.webhook.tls.secretName) -}}
{{- fail "\n\nwebhook.tls.enabled=true needs webhook.tls.secretName (a kubernetes.io/tls Secret with tls.crt and tls.key)" -}}
{{- end -}}
{{- if and .Values.webhook.ingress.enabled (not .Values.webhook.ingress.host) -}}
{{- fail "\n\nwebhook.ingress.enabled=true needs webhook.ingress.host (the public host name Labelbox calls)" -}}
{{- end -}}
{{- if and .Values.operator.clusterWide .Values.operator.watchNamespaces -}}
{{- fail "\n\nset either operator.clusterWide=true or operator.watchNamespaces, not both" -}}
{{- end -}}
{{- end -}}

{{/* Pod- and container-level security contexts (restricted Pod Security Standard). */}}
{{- define "lbtrain.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "lbtrain.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}
