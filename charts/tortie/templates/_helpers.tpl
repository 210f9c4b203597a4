{{/*
Shared definitions. Object names are fixed (tortie-node, tortie-config, tortie-etcd-secrets)
so Calico-style tooling and the lab find them; one release per cluster.
*/}}

{{- define "tortie.labels" -}}
app.kubernetes.io/name: tortie
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tortie.selectorLabels" -}}
k8s-app: tortie-node
{{- end }}

{{- define "tortie.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The Secret the etcd TLS files come from. */}}
{{- define "tortie.etcdSecretName" -}}
{{ .Values.etcd.tls.existingSecret | default "tortie-etcd-secrets" }}
{{- end }}

{{/* "true" when the backend runs BGP. */}}
{{- define "tortie.bgpEnabled" -}}
{{- if has .Values.backend (list "bird" "exabgp") }}true{{ end }}
{{- end }}

{{/* "true" when BGP runs in the tortie-bgp sidecar. */}}
{{- define "tortie.bgpSidecar" -}}
{{- if and (include "tortie.bgpEnabled" .) .Values.bgp.sidecar }}true{{ end }}
{{- end }}

{{/* The BGP password Secrets to mount: those listed, and those bgpPeers name; one per line. */}}
{{- define "tortie.bgpSecretNames" -}}
{{- $names := .Values.bgpPasswordSecrets }}
{{- range .Values.bgpPeers }}
{{- $ref := dig "spec" "password" "secretKeyRef" "name" "" . }}
{{- if $ref }}{{ $names = append $names $ref }}{{ end }}
{{- end }}
{{- range $names | uniq | sortAlpha }}
{{ . }}
{{- end }}
{{- end }}

{{/* Start-up resources as one multi-document YAML of projectcalico.org/v3 objects. */}}
{{- define "tortie.startupResources" -}}
{{- range .Values.ipPools }}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: {{ .name }}
spec:
{{ toYaml .spec | indent 2 }}
{{- end }}
{{- with .Values.bgpConfiguration }}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
{{ toYaml . | indent 2 }}
{{- end }}
{{- range .Values.bgpPeers }}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: {{ .name }}
spec:
{{ toYaml .spec | indent 2 }}
{{- end }}
{{- end }}

{{/* The conflist template install-cni renders (Calico's __PLACEHOLDERS__). */}}
{{- define "tortie.cniNetworkConfig" -}}
{{- if .Values.cni.networkConfig }}
{{- .Values.cni.networkConfig }}
{{- else }}
{{- $main := dict "type" "tortie" "log_level" "__LOG_LEVEL__" "log_file_path" "__LOG_FILE_PATH__" "datastore_type" "etcdv3" "etcd_endpoints" "__ETCD_ENDPOINTS__" "nodename" "__KUBERNETES_NODE_NAME__" "mtu" "__CNI_MTU__" "cni_server_socket" "__CNI_SERVER_SOCKET__" "ipam" (dict "type" "tortie-ipam") }}
{{- /* Host paths where the agent publishes what the plugin reads (the plugin runs on the host). */}}
{{- $_ := set $main "mtu_file" (printf "%s/mtu" .Values.hostPaths.varLibCalico) }}
{{- $_ := set $main "nodename_file" (printf "%s/nodename" .Values.hostPaths.varLibCalico) }}
{{- $_ := set $main "endpoint_status_dir" (printf "%s/endpoint-status" .Values.hostPaths.varRunCalico) }}
{{- if .Values.etcd.tls.enabled }}
{{- $_ := set $main "etcd_ca_cert_file" "__ETCD_CA_CERT_FILE__" }}
{{- $_ := set $main "etcd_cert_file" "__ETCD_CERT_FILE__" }}
{{- $_ := set $main "etcd_key_file" "__ETCD_KEY_FILE__" }}
{{- end }}
{{- if .Values.cni.policySetupTimeoutSeconds }}
{{- $_ := set $main "policy_setup_timeout_seconds" .Values.cni.policySetupTimeoutSeconds }}
{{- end }}
{{- if .Values.cni.kubernetesMode }}
{{- $_ := set $main "policy" (dict "type" "k8s") }}
{{- $_ := set $main "kubernetes" (dict "kubeconfig" "__KUBECONFIG_FILEPATH__") }}
{{- end }}
{{- $plugins := list $main }}
{{- if .Values.cni.portmap }}
{{- $plugins = append $plugins (dict "type" "portmap" "snat" true "capabilities" (dict "portMappings" true)) }}
{{- end }}
{{- if .Values.cni.bandwidth }}
{{- $plugins = append $plugins (dict "type" "bandwidth" "capabilities" (dict "bandwidth" true)) }}
{{- end }}
{{- $conf := dict "name" .Values.cni.networkName "cniVersion" "1.0.0" "plugins" $plugins }}
{{- /* The MTU is a number in the conflist: unquote the placeholder after encoding. */}}
{{- toPrettyJson $conf | replace "\"__CNI_MTU__\"" "__CNI_MTU__" }}
{{- end }}
{{- end }}

{{/* Where the etcd TLS files are inside the containers (Calico's /calico-secrets). */}}
{{- define "tortie.etcdEnv" -}}
- name: ETCD_ENDPOINTS
  valueFrom:
    configMapKeyRef:
      name: tortie-config
      key: etcd_endpoints
{{- if .Values.etcd.tls.enabled }}
- name: ETCD_CA_CERT_FILE
  valueFrom:
    configMapKeyRef:
      name: tortie-config
      key: etcd_ca
- name: ETCD_CERT_FILE
  valueFrom:
    configMapKeyRef:
      name: tortie-config
      key: etcd_cert
- name: ETCD_KEY_FILE
  valueFrom:
    configMapKeyRef:
      name: tortie-config
      key: etcd_key
{{- end }}
{{- end }}

{{/* The agent's environment; the BGP sidecar gets the same, so both read one configuration. */}}
{{- define "tortie.nodeEnv" -}}
- name: DATASTORE_TYPE
  value: etcdv3
{{ include "tortie.etcdEnv" . }}
- name: CALICO_NETWORKING_BACKEND
  valueFrom:
    configMapKeyRef:
      name: tortie-config
      key: calico_backend
- name: NODENAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: CALICO_K8S_NODE_REF
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: IP
  value: {{ .Values.node.ip | quote }}
- name: IP_AUTODETECTION_METHOD
  value: {{ .Values.node.ipAutodetectionMethod | quote }}
{{- with .Values.node.as }}
- name: AS
  value: {{ . | quote }}
{{- end }}
- name: FELIX_IPINIPMTU
  valueFrom:
    configMapKeyRef:
      name: tortie-config
      key: veth_mtu
- name: FELIX_VXLANMTU
  valueFrom:
    configMapKeyRef:
      name: tortie-config
      key: veth_mtu
- name: FELIX_HEALTHENABLED
  value: "true"
- name: FELIX_HEALTHPORT
  value: {{ .Values.node.healthPort | quote }}
- name: FELIX_LOGSEVERITYSCREEN
  value: {{ .Values.node.logSeverity | quote }}
- name: FELIX_DEFAULTENDPOINTTOHOSTACTION
  value: {{ .Values.node.defaultEndpointToHostAction | quote }}
{{- if include "tortie.bgpSidecar" . }}
- name: TORTIE_BGP_SIDECAR
  value: "true"
{{- end }}
{{- if include "tortie.bgpEnabled" . }}
- name: TORTIE_BGP_SECRETS_DIR
  value: /etc/tortie/bgp-secrets
{{- end }}
{{- with .Values.node.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Mounts of the etcd TLS Secret, when TLS is on. */}}
{{- define "tortie.etcdMount" -}}
{{- if .Values.etcd.tls.enabled }}
- name: etcd-certs
  mountPath: /calico-secrets
  readOnly: true
{{- end }}
{{- end }}

{{/* Mounts of the BGP password Secrets, at /etc/tortie/bgp-secrets/<name>. */}}
{{- define "tortie.bgpSecretMounts" -}}
{{- range $i, $name := include "tortie.bgpSecretNames" . | trim | splitList "\n" | compact }}
- name: bgp-secret-{{ $i }}
  mountPath: /etc/tortie/bgp-secrets/{{ $name }}
  readOnly: true
{{- end }}
{{- end }}

{{/* The default pool, created by the agent at start-up (calico-node's variables). */}}
{{- define "tortie.poolEnv" -}}
{{- if .Values.defaultIPv4Pool.disabled }}
- name: NO_DEFAULT_POOLS
  value: "true"
{{- else }}
{{- with .Values.defaultIPv4Pool.cidr }}
- name: CALICO_IPV4POOL_CIDR
  value: {{ . | quote }}
{{- end }}
- name: CALICO_IPV4POOL_IPIP
  value: {{ .Values.defaultIPv4Pool.ipipMode | quote }}
- name: CALICO_IPV4POOL_VXLAN
  value: {{ .Values.defaultIPv4Pool.vxlanMode | quote }}
- name: CALICO_IPV4POOL_BLOCK_SIZE
  value: {{ .Values.defaultIPv4Pool.blockSize | quote }}
- name: CALICO_IPV4POOL_NAT_OUTGOING
  value: {{ .Values.defaultIPv4Pool.natOutgoing | quote }}
- name: CALICO_IPV4POOL_NODE_SELECTOR
  value: {{ .Values.defaultIPv4Pool.nodeSelector | quote }}
{{- end }}
{{- end }}
