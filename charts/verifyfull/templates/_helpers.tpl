{{- define "verifyfull.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "verifyfull.labels" -}}
app.kubernetes.io/name: verifyfull
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "verifyfull.selector" -}}
app.kubernetes.io/name: verifyfull
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "verifyfull.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "verifyfull.tlsSecret" -}}
{{- if eq .Values.certificates.mode "secret" -}}
{{ .Values.certificates.secret.name }}
{{- else -}}
{{ include "verifyfull.fullname" . }}-webhook-tls
{{- end -}}
{{- end -}}

{{- /* Namespaces never judged: kube-system, the release's, and the user's list. */ -}}
{{- define "verifyfull.excluded" -}}
{{- $list := concat (list "kube-system" .Release.Namespace) .Values.excludedNamespaces | uniq -}}
{{- toJson $list -}}
{{- end -}}

{{- /* Restricted Pod Security: for every Pod of the chart. */ -}}
{{- define "verifyfull.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "verifyfull.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- /* The engine settings, as the binaries read them. */ -}}
{{- define "verifyfull.settingsEnv" -}}
- name: VERIFYFULL_UNRESOLVED
  value: {{ .Values.settings.unresolved | quote }}
- name: VERIFYFULL_UNVERIFIABLE
  value: {{ .Values.settings.unverifiable | quote }}
- name: VERIFYFULL_LOOPBACK
  value: {{ .Values.settings.loopback | quote }}
{{- end -}}

{{- /* The ValidatingWebhookConfiguration (docs/admission.md): one entry per mode, routed by the
namespace label; the default mode's entry also takes unlabelled namespaces; enforce fails
closed, warn and audit open; plus one entry for changes of the mode label. */ -}}
{{- define "verifyfull.validating" -}}
{{- $root := . -}}
{{- $fullname := include "verifyfull.fullname" . -}}
{{- $excluded := include "verifyfull.excluded" . | fromJsonArray -}}
{{- $rules := list
  (dict "operations" (list "CREATE" "UPDATE") "apiGroups" (list "") "apiVersions" (list "*") "resources" (list "pods" "pods/ephemeralcontainers" "replicationcontrollers") "scope" "Namespaced")
  (dict "operations" (list "CREATE" "UPDATE") "apiGroups" (list "apps") "apiVersions" (list "*") "resources" (list "deployments" "statefulsets" "daemonsets" "replicasets") "scope" "Namespaced")
  (dict "operations" (list "CREATE" "UPDATE") "apiGroups" (list "batch") "apiVersions" (list "*") "resources" (list "jobs" "cronjobs") "scope" "Namespaced") -}}
{{- $skipUnchanged := dict "name" "skip-unchanged-updates" "expression" "request.operation != 'UPDATE' || object.spec != oldObject.spec || (has(object.metadata.annotations) ? object.metadata.annotations : {}) != (has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {})" -}}
{{- /* Objects a built-in controller makes from its owner's template are never denied (the
owner was judged when it was written): the API server skips them, so an outage of
verifyfull cannot stall a rollout, a scheduled run or a scale-up either. Under
per-controller credentials each controller has its own account; otherwise the controller
manager writes as system:kube-controller-manager. */ -}}
{{- $skipControllerMade := dict "name" "skip-controller-made" "expression" "!((request.resource.group == '' && request.resource.resource == 'pods' && request.operation in ['CREATE'] && request.userInfo.username in ['system:serviceaccount:kube-system:replicaset-controller', 'system:serviceaccount:kube-system:replication-controller', 'system:serviceaccount:kube-system:statefulset-controller', 'system:serviceaccount:kube-system:daemon-set-controller', 'system:serviceaccount:kube-system:job-controller', 'system:kube-controller-manager']) || (request.resource.group == 'apps' && request.resource.resource == 'replicasets' && request.operation in ['CREATE', 'UPDATE'] && request.userInfo.username in ['system:serviceaccount:kube-system:deployment-controller', 'system:kube-controller-manager']) || (request.resource.group == 'batch' && request.resource.resource == 'jobs' && request.operation in ['CREATE'] && request.userInfo.username in ['system:serviceaccount:kube-system:cronjob-controller', 'system:kube-controller-manager']))" -}}
{{- $webhooks := list -}}
{{- $all := list "enforce" "warn" "audit" -}}
{{- range $mode := $all -}}
{{- $selector := dict "key" "verifyfull.dev/mode" "operator" "In" "values" (list $mode) -}}
{{- if eq $mode $root.Values.mode -}}
{{- $selector = dict "key" "verifyfull.dev/mode" "operator" "NotIn" "values" (append (without $all $mode) "off") -}}
{{- end -}}
{{- $webhooks = append $webhooks (dict
  "name" (printf "%s.verifyfull.dev" $mode)
  "admissionReviewVersions" (list "v1") "sideEffects" "None" "timeoutSeconds" (int $root.Values.webhook.timeoutSeconds)
  "failurePolicy" (ternary "Fail" "Ignore" (eq $mode "enforce")) "matchPolicy" "Equivalent"
  "clientConfig" (dict "service" (dict "namespace" $root.Release.Namespace "name" (printf "%s-webhook" $fullname) "port" 443 "path" (printf "/validate/%s" $mode)))
  "rules" $rules
  "namespaceSelector" (dict "matchExpressions" (list $selector (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded)))
  "matchConditions" (list $skipUnchanged $skipControllerMade)) -}}
{{- end -}}
{{- $label := "(has(%s.metadata.labels) && 'verifyfull.dev/mode' in %s.metadata.labels ? %s.metadata.labels['verifyfull.dev/mode'] : '')" -}}
{{- $webhooks = append $webhooks (dict
  "name" "mode-label.verifyfull.dev"
  "admissionReviewVersions" (list "v1") "sideEffects" "None" "timeoutSeconds" (int $root.Values.webhook.timeoutSeconds)
  "failurePolicy" "Fail" "matchPolicy" "Equivalent"
  "clientConfig" (dict "service" (dict "namespace" $root.Release.Namespace "name" (printf "%s-webhook" $fullname) "port" 443 "path" "/validate/enforce"))
  "rules" (list (dict "operations" (list "UPDATE") "apiGroups" (list "") "apiVersions" (list "v1") "resources" (list "namespaces") "scope" "Cluster"))
  "namespaceSelector" (dict "matchExpressions" (list (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded)))
  "matchConditions" (list (dict "name" "mode-label-changes" "expression" (printf "%s != %s" (printf $label "object" "object" "object") (printf $label "oldObject" "oldObject" "oldObject"))))) -}}
{{- dict "apiVersion" "admissionregistration.k8s.io/v1" "kind" "ValidatingWebhookConfiguration" "metadata" (include "verifyfull.configurationMeta" . | fromJson) "webhooks" $webhooks | toJson -}}
{{- end -}}

{{- /* The MutatingWebhookConfiguration: the CA into Pods at admission (docs/operator.md). */ -}}
{{- define "verifyfull.mutating" -}}
{{- $fullname := include "verifyfull.fullname" . -}}
{{- $excluded := include "verifyfull.excluded" . | fromJsonArray -}}
{{- $webhook := dict
  "name" "inject.verifyfull.dev"
  "admissionReviewVersions" (list "v1") "sideEffects" "None" "timeoutSeconds" (int .Values.webhook.timeoutSeconds)
  "failurePolicy" "Fail" "reinvocationPolicy" "IfNeeded" "matchPolicy" "Equivalent"
  "clientConfig" (dict "service" (dict "namespace" .Release.Namespace "name" (printf "%s-webhook" $fullname) "port" 443 "path" "/mutate"))
  "rules" (list (dict "operations" (list "CREATE") "apiGroups" (list "") "apiVersions" (list "v1") "resources" (list "pods") "scope" "Namespaced"))
  "namespaceSelector" (dict "matchExpressions" (list
    (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded)
    (dict "key" "verifyfull.dev/mode" "operator" "NotIn" "values" (list "off")))) -}}
{{- dict "apiVersion" "admissionregistration.k8s.io/v1" "kind" "MutatingWebhookConfiguration" "metadata" (include "verifyfull.configurationMeta" . | fromJson) "webhooks" (list $webhook) | toJson -}}
{{- end -}}

{{- /* Metadata of both configurations; with cert-manager its cainjector keeps the
caBundle too (the operator writes the same value, from the Secret's ca.crt). */ -}}
{{- define "verifyfull.configurationMeta" -}}
{{- $fullname := include "verifyfull.fullname" . -}}
{{- $meta := dict "name" $fullname "labels" (include "verifyfull.labels" . | fromYaml) -}}
{{- if eq .Values.certificates.mode "cert-manager" -}}
{{- $_ := set $meta "annotations" (dict "cert-manager.io/inject-ca-from" (printf "%s/%s-webhook" .Release.Namespace $fullname)) -}}
{{- end -}}
{{- toJson $meta -}}
{{- end -}}

{{- /* The ConfigMap of the user's application profiles: the chart's, from `profiles`, or the user's own. */ -}}
{{- define "verifyfull.profilesConfigMap" -}}
{{- if .Values.profilesConfigMap -}}
{{ .Values.profilesConfigMap }}
{{- else if .Values.profiles -}}
{{ include "verifyfull.fullname" . }}-profiles
{{- end -}}
{{- end -}}

{{- /* Where both binaries read the profiles, re-read while running (docs/applications.md). */ -}}
{{- define "verifyfull.profilesEnv" -}}
{{- if include "verifyfull.profilesConfigMap" . }}
- name: VERIFYFULL_PROFILES_DIR
  value: /etc/verifyfull/profiles
{{- end }}
{{- end -}}

{{- define "verifyfull.profilesMount" -}}
{{- if include "verifyfull.profilesConfigMap" . }}
- name: profiles
  mountPath: /etc/verifyfull/profiles
  readOnly: true
{{- end }}
{{- end -}}

{{- define "verifyfull.profilesVolume" -}}
{{- with include "verifyfull.profilesConfigMap" . }}
- name: profiles
  configMap:
    name: {{ . | quote }}
{{- end }}
{{- end -}}
