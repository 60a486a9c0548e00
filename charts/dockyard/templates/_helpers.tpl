{{/* Chart name, for app.kubernetes.io/name. */}}
{{- define "dockyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
Prefix of every object name: the release name (so `helm install dockyard` gives
dockyard-operator, dockyard-mlflow, ...). Truncated to leave room for suffixes.
*/}}
{{- define "dockyard.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "dockyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "dockyard.labels" -}}
helm.sh/chart: {{ include "dockyard.chart" . }}
app.kubernetes.io/name: {{ include "dockyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dockyard
{{- end -}}

{{/* Selector labels of a component: include "dockyard.selectorLabels" (list . "operator") */}}
{{- define "dockyard.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "dockyard.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "dockyard.componentLabels" -}}
{{ include "dockyard.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Image reference: include "dockyard.image" (list $ .Values.images.operator) */}}
{{- define "dockyard.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "dockyard.operator.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "dockyard.fullname" .)) .Values.serviceAccount.name -}}
{{- end -}}

{{/* true when the operator watches a list of namespaces rather than the whole cluster. */}}
{{- define "dockyard.namespaced" -}}
{{- if .Values.watch.namespaces -}}true{{- end -}}
{{- end -}}

{{/*
ServiceAccount of Job/serving Pods ("" = each namespace's default ServiceAccount).
*/}}
{{- define "dockyard.workloadServiceAccountName" -}}
{{- if .Values.workloadServiceAccount.name -}}
{{- .Values.workloadServiceAccount.name -}}
{{- else if include "dockyard.namespaced" . -}}
dockyard-workload
{{- end -}}
{{- end -}}

{{- define "dockyard.leaseName" -}}
{{- default (printf "%s-operator" (include "dockyard.fullname" .)) .Values.leaderElection.name -}}
{{- end -}}

{{/* The embedded MLflow server runs unless an external URI is given. */}}
{{- define "dockyard.mlflow.embedded" -}}
{{- if not .Values.mlflow.external.uri -}}true{{- end -}}
{{- end -}}

{{/* The embedded MLflow runs its basic-auth app (mlflow.auth.enabled). */}}
{{- define "dockyard.mlflow.auth" -}}
{{- if and (include "dockyard.mlflow.embedded" .) .Values.mlflow.auth.enabled -}}true{{- end -}}
{{- end -}}

{{/* The Secret with the embedded MLflow's admin and operator passwords. */}}
{{- define "dockyard.mlflow.authSecret" -}}
{{- default (printf "%s-auth" (include "dockyard.mlflow.fullname" .)) .Values.mlflow.auth.existingSecret -}}
{{- end -}}

{{/* Environment of the embedded MLflow's containers under auth (values from its Secret). */}}
{{- define "dockyard.mlflow.authEnv" -}}
{{- $secret := include "dockyard.mlflow.authSecret" . -}}
- name: MLFLOW_AUTH_CONFIG_PATH
  value: /etc/mlflow-auth/basic_auth.ini
- name: MLFLOW_AUTH_ADMIN_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: admin-username
- name: MLFLOW_AUTH_ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: admin-password
# Flask's session/CSRF key: every worker (and restart) must share it.
- name: MLFLOW_FLASK_SERVER_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: flask-secret-key
{{- end -}}

{{- define "dockyard.mlflow.fullname" -}}
{{- printf "%s-mlflow" (include "dockyard.fullname" .) -}}
{{- end -}}

{{/* In-cluster FQDN of the embedded MLflow Service (reachable from every namespace). */}}
{{- define "dockyard.mlflow.host" -}}
{{- printf "%s.%s.svc.%s" (include "dockyard.mlflow.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* MLflow URL the operator uses. */}}
{{- define "dockyard.mlflow.uri" -}}
{{- if .Values.mlflow.external.uri -}}
{{- .Values.mlflow.external.uri -}}
{{- else -}}
{{- printf "http://%s:%d" (include "dockyard.mlflow.host" .) (int .Values.mlflow.service.port) -}}
{{- end -}}
{{- end -}}

{{/* MLflow URL the Job/serving Pods use. */}}
{{- define "dockyard.mlflow.podUri" -}}
{{- if and .Values.mlflow.external.uri .Values.mlflow.external.podUri -}}
{{- .Values.mlflow.external.podUri -}}
{{- else -}}
{{- include "dockyard.mlflow.uri" . -}}
{{- end -}}
{{- end -}}

{{/* Training backends enabled in values, as the comma list DOCKYARD_ENABLED_BACKENDS expects. */}}
{{- define "dockyard.enabledBackends" -}}
{{- $enabled := list "job" -}}
{{- range $name := list "trainjob" "rayjob" -}}
{{- if index $.Values.trainingBackends $name -}}
{{- $enabled = append $enabled $name -}}
{{- end -}}
{{- end -}}
{{- join "," $enabled -}}
{{- end -}}

{{/* Routers enabled in values, as the comma list DOCKYARD_ENABLED_ROUTERS expects. */}}
{{- define "dockyard.enabledRouters" -}}
{{- $enabled := list -}}
{{- range $name := list "builtin" "gateway" "istio" "seldon" -}}
{{- if index $.Values.routers $name -}}
{{- $enabled = append $enabled $name -}}
{{- end -}}
{{- end -}}
{{- join "," $enabled -}}
{{- end -}}

{{/*
Pod- and container-level security contexts shared by the chart's Pods: non-root,
no privilege escalation, read-only root filesystem, no capabilities, RuntimeDefault seccomp.
*/}}
{{- define "dockyard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "dockyard.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Namespaced RBAC rules of the operator (used by the ClusterRole in cluster scope and by the
Role in every watched namespace in namespaced scope). Argument: the root context.
*/}}
{{- define "dockyard.rbac.namespacedRules" -}}
# Exactly what the operator calls (tests/integration/test_rbac_in_use.py checks this against
# the apiserver's audit log). Children are written with server-side apply: a PATCH, which the
# apiserver also authorizes as `create` when the object does not exist yet; never update.
# Jobs (exactly once) and Events are plain creates.
# Dockyard's own kinds: kopf lists and watches them; the operator patches their /status.
- apiGroups: ["dockyard.dev"]
  resources: ["datasets", "trainingruns", "modeldeployments"]
  verbs: ["list", "watch"]
- apiGroups: ["dockyard.dev"]
  resources: ["datasets/status", "trainingruns/status", "modeldeployments/status"]
  verbs: ["patch"]
# A TrainingRun carries a finalizer while its MLflow run may be open (ended as KILLED when
# the TrainingRun is deleted): the operator patches metadata.finalizers, nothing else.
- apiGroups: ["dockyard.dev"]
  resources: ["trainingruns"]
  verbs: ["patch"]
# A ModelDeployment's rollout removes the approve/retry annotation it acted on (patch) and,
# when an approval names nobody, reads who set it from managedFields (get).
- apiGroups: ["dockyard.dev"]
  resources: ["modeldeployments"]
  verbs: ["get", "patch"]
# Children carry ownerReferences with blockOwnerDeletion; under the
# OwnerReferencesPermissionEnforcement admission plugin that needs `update` on the owner's
# finalizers subresource (the create is refused with 403 otherwise).
- apiGroups: ["dockyard.dev"]
  resources: ["datasets/finalizers", "trainingruns/finalizers", "modeldeployments/finalizers"]
  verbs: ["update"]
# Profiling and training Jobs: created once each, never changed; a Dataset's old profile
# Jobs are deleted beyond the newest few (the rest go with their owner).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# A Job's Pods: its termination message, and why a training Pod is stuck.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Serving and builtin-router Deployments: applied, watched, pruned.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Serving/router Services and the router's nginx ConfigMap: applied and pruned.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "create", "patch", "delete"]
# The NetworkPolicy of each ModelDeployment's serving Pods: applied, and pruned when the
# ModelDeployment switches to seldon or networkPolicies.enabled is turned off (granted even
# then, so the operator can remove the ones it made).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "create", "patch", "delete"]
# ConfigMaps are also watched: a Dataset whose volume is a ConfigMap re-profiles when it is
# edited, and a hand-edited router config is put back at once.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# get: check that a Secret referenced by a spec exists (never list or watch). With the
# embedded MLflow's auth also create/patch, of one Secret per workload namespace only in
# practice: dockyard-mlflow-workload, the namespace's MLflow credential (docs/security.md).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: {{ if include "dockyard.mlflow.auth" $ }}["get", "create", "patch"]{{ else }}["get"]{{ end }}
# Kubernetes Events on phase transitions and errors (each a new Event).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The enabled training backends' objects: made once per attempt (create), then followed (get).
{{- if .Values.trainingBackends.trainjob }}
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["trainjobs"]
  verbs: ["get", "create"]
{{- end }}
{{- if .Values.trainingBackends.rayjob }}
- apiGroups: ["ray.io"]
  resources: ["rayjobs"]
  verbs: ["get", "create"]
{{- end }}
# The enabled routers' objects: applied, and pruned when a ModelDeployment switches router.
{{- if .Values.routers.gateway }}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end }}
{{- if .Values.routers.istio }}
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end }}
{{- if .Values.routers.seldon }}
- apiGroups: ["machinelearning.seldon.io"]
  resources: ["seldondeployments"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end }}
{{- end -}}
