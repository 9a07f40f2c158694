{{/* Names and labels. */}}
{{- define "oidc-ext-authz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "oidc-ext-authz.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "oidc-ext-authz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "oidc-ext-authz.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "oidc-ext-authz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oidc-ext-authz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "oidc-ext-authz.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "oidc-ext-authz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: oidc-ext-authz
{{- end -}}

{{/* The gRPC provider's in-cluster DNS name, as the meshConfig extension provider must name it. */}}
{{- define "oidc-ext-authz.serviceHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "oidc-ext-authz.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/*
The service config: .Values.config plus what the chart owns (ports, session.keys from existingSecret.cookieKeys,
Redis from .Values.redis).
*/}}
{{- define "oidc-ext-authz.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $server := default (dict) $cfg.server -}}
{{- $grpc := default (dict) $server.grpc -}}
{{- $_ := set $grpc "port" 9000 -}}
{{- $_ := set $server "grpc" $grpc -}}
{{- $admin := default (dict) $server.admin -}}
{{- $_ := set $admin "port" 9090 -}}
{{- $_ := set $server "admin" $admin -}}
{{- $_ := set $cfg "server" $server -}}
{{- $session := default (dict) $cfg.session -}}
{{- $keys := list -}}
{{- range $i, $k := .Values.existingSecret.cookieKeys.keys -}}
{{- $keys = append $keys (dict "env" (printf "COOKIE_KEY_%d" $i)) -}}
{{- end -}}
{{- $_ := set $session "keys" $keys -}}
{{- if .Values.redis.enabled -}}
{{- $redis := dict "mode" .Values.redis.mode "tls" .Values.redis.tls "keyPrefix" .Values.redis.keyPrefix "commandTimeoutMs" (int .Values.redis.commandTimeoutMs) -}}
{{- if eq .Values.redis.mode "standalone" -}}
{{- $_ := set $redis "url" (required "redis.url is required for redis.mode standalone" .Values.redis.url) -}}
{{- else -}}
{{- $_ := set $redis "nodes" (required "redis.nodes is required for sentinel and cluster" .Values.redis.nodes) -}}
{{- end -}}
{{- if .Values.redis.sentinelName -}}
{{- $_ := set $redis "sentinelName" .Values.redis.sentinelName -}}
{{- end -}}
{{- if .Values.redis.existingSecret.name -}}
{{- $_ := set $redis "password" (dict "env" "REDIS_PASSWORD") -}}
{{- end -}}
{{- $_ := set $session "store" "redis" -}}
{{- $_ := set $session "redis" $redis -}}
{{- end -}}
{{- $_ := set $cfg "session" $session -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* AuthorizationPolicy hosts: each exact host plus its "host:*" twin; wildcard hosts plus their :443/:80 forms. */}}
{{- define "oidc-ext-authz.policyHosts" -}}
{{- $out := list -}}
{{- range .Values.authorizationPolicy.hosts -}}
{{- $out = append $out . -}}
{{- if hasPrefix "*" . -}}
{{- $out = append $out (printf "%s:443" .) -}}
{{- $out = append $out (printf "%s:80" .) -}}
{{- else -}}
{{- $out = append $out (printf "%s:*" .) -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The TCP port of (dict "url" U "default" D): U's explicit port, else D, else 80 for http and 443 otherwise. */}}
{{- define "oidc-ext-authz.urlPort" -}}
{{- $u := urlParse .url -}}
{{- $parts := splitList ":" $u.host -}}
{{- if gt (len $parts) 1 -}}{{ last $parts }}
{{- else if .default -}}{{ .default }}
{{- else if eq $u.scheme "http" -}}80
{{- else -}}443
{{- end -}}
{{- end -}}

{{/*
Egress ports the service needs, read from its own config so the policy cannot drift from it: every provider's
issuer, every bearer issuer's JWKS (or issuer, for discovery), Redis, and networkPolicy.extraEgressPorts. Sorted,
deduplicated, one per line.
*/}}
{{- define "oidc-ext-authz.egressPorts" -}}
{{- $ports := list -}}
{{- $config := ternary (dict) .Values.config (not (empty .Values.existingConfigMap)) -}}
{{- range $config.providers -}}
{{- $ports = append $ports (include "oidc-ext-authz.urlPort" (dict "url" .issuer)) -}}
{{- end -}}
{{- range $config.issuers -}}
{{- $ports = append $ports (include "oidc-ext-authz.urlPort" (dict "url" (default .issuer .jwksUri))) -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- if eq .Values.redis.mode "standalone" -}}
{{- $ports = append $ports (include "oidc-ext-authz.urlPort" (dict "url" .Values.redis.url "default" "6379")) -}}
{{- else -}}
{{- range .Values.redis.nodes -}}{{- $ports = append $ports (toString .port) -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- range .Values.networkPolicy.extraEgressPorts -}}
{{- $ports = append $ports (toString .) -}}
{{- end -}}
{{- if .Values.tokenReview.enabled -}}
{{- range .Values.tokenReview.egressPorts -}}{{- $ports = append $ports (toString .) -}}{{- end -}}
{{- end -}}
{{- $ports | uniq | sortAlpha | join "\n" -}}
{{- end -}}
