{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "tandem.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "tandem.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tandem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tandem.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: tandem
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tandem.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tandem.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The rules the operator needs, and nothing more. Each rule says why it exists.
*/}}
{{- define "tandem.rules" -}}
# Watch InferenceServices; patch them for kopf's bookkeeping annotations.
- apiGroups: ["tandem.dev"]
  resources: ["inferenceservices"]
  verbs: ["get", "list", "watch", "patch"]
# Write the status roll-up.
- apiGroups: ["tandem.dev"]
  resources: ["inferenceservices/status"]
  verbs: ["get", "patch"]
# Pool and router Deployments: server-side apply, prune, watch for status; the autoscaler
# patches replicas.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Headless pool Services, the router Service, the LMCache ConfigMap, the router's
# ServiceAccount: server-side apply and prune.
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "list", "create", "patch", "delete"]
# The router's Role and RoleBinding (read EndpointSlices): apply and prune.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "create", "patch", "delete"]
# Granting the router's Role requires holding its permissions (RBAC escalation check).
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
# Pending-pod reasons for status; engine pod IPs for the autoscaler's metric scrape; the
# pod-deletion-cost annotation so scale-down removes the least busy engine.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "patch"]
# Warning and Normal events on InferenceServices.
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
