{{/*
Name of every object of the release: <release>-vae-serving, or the release name alone when it
already contains the chart name, or fullnameOverride. Cut to 63 characters (DNS label).
*/}}
{{- define "vae-serving.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Selector labels: built from the chart name and release name only, never from values, because a
Deployment's selector is immutable and an upgrade that changed it would fail.
*/}}
{{- define "vae-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of every object, the selector labels aside.
*/}}
{{- define "vae-serving.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
Labels of the release's objects: common and selector labels.
*/}}
{{- define "vae-serving.labels" -}}
{{ include "vae-serving.commonLabels" . }}
{{ include "vae-serving.selectorLabels" . }}
{{- end -}}

{{/*
The image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "vae-serving.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "vae-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "vae-serving.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: given, or derived from the preStop pause and the server's drain.
Kubernetes counts the preStop hook inside this period, so it must exceed both together.
*/}}
{{- define "vae-serving.terminationGracePeriodSeconds" -}}
{{- $needed := addf .Values.preStopSleepSeconds .Values.config.graceSeconds -}}
{{- $given := .Values.terminationGracePeriodSeconds | int -}}
{{- if eq $given 0 -}}
{{- addf $needed 10 | ceil | int -}}
{{- else if le (float64 $given) $needed -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be above preStopSleepSeconds + config.graceSeconds (%v), or the pod is killed while it drains" $given $needed) -}}
{{- else -}}
{{- $given -}}
{{- end -}}
{{- end -}}

{{/*
VAE_WORKERS: workers when given, else one per CPU of resources.limits.cpu, rounded up. The limit
is a Kubernetes quantity: a number (2, 1.5) or a string ("2", "1500m"). Empty with neither, so
that the server picks its own default, the CPUs it may use.
*/}}
{{- define "vae-serving.workers" -}}
{{- $workers := .Values.workers | int -}}
{{- $cpu := dig "limits" "cpu" "" (.Values.resources | default dict) | toString -}}
{{- if and (eq $workers 0) $cpu -}}
{{- if hasSuffix "m" $cpu -}}
{{- $workers = divf (trimSuffix "m" $cpu) 1000 | ceil | int -}}
{{- else -}}
{{- $workers = $cpu | float64 | ceil | int -}}
{{- end -}}
{{- end -}}
{{- if gt $workers 0 -}}
{{- $workers -}}
{{- end -}}
{{- end -}}

{{/*
The image's health check client against host (dict "root" $ "host" "...") on the gRPC port.
With TLS it trusts the Secret's CA and checks the certificate against tls.serverName; with
mutual TLS it presents the server's own certificate as its client certificate.
*/}}
{{- define "vae-serving.healthcheckCommand" -}}
{{- $root := .root -}}
{{- $tls := $root.Values.tls -}}
- python
- -m
- service.healthcheck
- --target
- {{ printf "%s:%d" .host ($root.Values.ports.grpc | int) }}
{{- if $tls.enabled }}
- --ca-file
- {{ printf "%s/%s" $tls.mountPath $tls.caKey }}
- --server-name
- {{ $tls.serverName | default (printf "%s.%s.svc" (include "vae-serving.fullname" $root) $root.Release.Namespace) }}
{{- if $tls.clientAuth }}
- --cert-file
- {{ printf "%s/%s" $tls.mountPath $tls.certKey }}
- --key-file
- {{ printf "%s/%s" $tls.mountPath $tls.keyKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The check of a probe: kubelet's native gRPC probe on the health service, or, with TLS (which
kubelet's gRPC probe cannot speak), the image's own health check client.
*/}}
{{- define "vae-serving.probeCheck" -}}
{{- if .Values.tls.enabled -}}
exec:
  command:
    {{- include "vae-serving.healthcheckCommand" (dict "root" . "host" "127.0.0.1") | nindent 4 }}
{{- else -}}
grpc:
  port: {{ .Values.ports.grpc }}
{{- end -}}
{{- end -}}

{{/*
The volume of the TLS Secret: the certificate, key and CA only, readable by the pod's group.
*/}}
{{- define "vae-serving.tlsVolume" -}}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 0440
    items:
      - key: {{ .Values.tls.certKey }}
        path: {{ .Values.tls.certKey }}
      - key: {{ .Values.tls.keyKey }}
        path: {{ .Values.tls.keyKey }}
      - key: {{ .Values.tls.caKey }}
        path: {{ .Values.tls.caKey }}
{{- end -}}
