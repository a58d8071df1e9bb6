{{/* The chart's name, as resource names use it. */}}
{{- define "aml-identity-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: the release name, with the chart name unless it holds it. */}}
{{- define "aml-identity-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := include "aml-identity-operator.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "aml-identity-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aml-identity-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "aml-identity-operator.labels" -}}
{{ include "aml-identity-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: aml-identity-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "aml-identity-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aml-identity-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: the digest wins over the tag. */}}
{{- define "aml-identity-operator.image" -}}
{{- $repository := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repository = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespace holding the Secrets and ServiceAccounts of ClusterAzureCredentials. */}}
{{- define "aml-identity-operator.clusterResourceNamespace" -}}
{{- default .Release.Namespace .Values.operator.clusterResourceNamespace }}
{{- end }}

{{/* The operator's rules inside the namespaces it serves (see rbac.yaml). */}}
{{- /* The managed identity endpoint's in-cluster URL, written as MSI_ENDPOINT into token Secrets. */}}
{{- define "aml-identity-operator.msiEndpointURL" -}}
http://{{ include "aml-identity-operator.fullname" . }}-msi.{{ .Release.Namespace }}.svc:{{ .Values.msiEndpoint.port }}/msi/token
{{- end }}

{{- define "aml-identity-operator.namespacedRules" }}
- apiGroups: [amlidentity.io]
  resources: [azurecredentials, workspaces, computeidentities, datastores, registryconnections]
  verbs: [get, list, watch, patch]
- apiGroups: [amlidentity.io]
  resources: [azurecredentials/status, workspaces/status, computeidentities/status, datastores/status, registryconnections/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, patch]
{{- if .Values.rbac.serviceAccountTokenCreate }}
- apiGroups: [""]
  resources: [serviceaccounts/token]
  verbs: [create]
{{- end }}
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
