{{/* "true" when tortie-kube-controllers takes a Lease: asked for, or more than one replica. */}}
{{- define "tortie.kubeControllersElection" -}}
{{- if or .Values.kubeControllers.leaderElection (gt (int .Values.kubeControllers.replicas) 1) }}true{{ end }}
{{- end }}
