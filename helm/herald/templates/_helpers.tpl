{{/* Names and labels. */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "herald.fullname" -}}
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

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "herald.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret with the token secret and API key: the user's, or the dev one. */}}
{{- define "herald.authSecretName" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else -}}
{{- printf "%s-auth" (include "herald.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "herald.hasAuthSecret" -}}
{{- if or .Values.auth.existingSecret .Values.auth.create -}}true{{- end -}}
{{- end -}}

{{/* Whether the server API has a key (helm test publishes through it). */}}
{{- define "herald.hasApiKey" -}}
{{- if and (include "herald.hasAuthSecret" .) .Values.auth.apiKeyKey -}}true{{- end -}}
{{- end -}}

{{/*
A duration as whole seconds, rounded up. The schema restricts the durations used here
to one number and one unit: "500ms", "5s", "2m" or "1h".
*/}}
{{- define "herald.seconds" -}}
{{- $d := toString . -}}
{{- $n := regexFind "^[0-9]+" $d | int -}}
{{- $unit := regexReplaceAll "^[0-9]+" $d "" -}}
{{- if eq $unit "ms" -}}{{ div (add $n 999) 1000 }}
{{- else if eq $unit "s" -}}{{ $n }}
{{- else if eq $unit "m" -}}{{ mul $n 60 }}
{{- else if eq $unit "h" -}}{{ mul $n 3600 }}
{{- else -}}{{ fail (printf "cannot read the duration %q: use e.g. 500ms, 5s, 2m or 1h" $d) }}
{{- end -}}
{{- end -}}

{{/*
SIGTERM comes after the preStop sleep. Herald then drains over shutdown.drain_window,
waits up to shutdown.timeout for the closed connections to end, and up to 5 s more for
its HTTP server to stop: the grace period covers all of it plus the margin, so the
kubelet's SIGKILL never cuts a drain short.
*/}}
{{- define "herald.terminationGracePeriodSeconds" -}}
{{- $drain := include "herald.seconds" .Values.config.shutdown.drain_window | int -}}
{{- $timeout := include "herald.seconds" .Values.config.shutdown.timeout | int -}}
{{- add .Values.lifecycle.preStopSleepSeconds $drain $timeout 5 .Values.lifecycle.terminationMarginSeconds -}}
{{- end -}}

{{/*
One TOML value. Values arrive from YAML as bool, float64 (every number), string or a
list of them; Herald's numeric settings are all whole numbers. Strings are written as
JSON strings, which are valid TOML basic strings; a list as a TOML array of its items.
*/}}
{{- define "herald.toml.value" -}}
{{- if kindIs "bool" . -}}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) -}}{{ int64 . }}
{{- else if kindIs "slice" . -}}
[{{ range $i, $item := . }}{{ if $i }}, {{ end }}{{ include "herald.toml.value" $item }}{{ end }}]
{{- else -}}{{ toString . | toJson }}
{{- end -}}
{{- end -}}

{{/*
One TOML table: its own keys, then its sub-tables under [path.key]. A table with only
sub-tables (like [namespaces]) gets no header of its own.
*/}}
{{- define "herald.toml.table" -}}
{{- $path := .path -}}
{{- $table := .table -}}
{{- range $key := keys $table | sortAlpha -}}
{{- $value := get $table $key -}}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ include "herald.toml.value" $value }}
{{- end -}}
{{- end -}}
{{- range $key := keys $table | sortAlpha -}}
{{- $value := get $table $key -}}
{{- if kindIs "map" $value -}}
{{- $name := ternary $key (toJson $key) (regexMatch "^[A-Za-z0-9_-]+$" $key) -}}
{{- $sub := ternary $name (printf "%s.%s" $path $name) (eq $path "") -}}
{{- $hasValues := false -}}
{{- range $v := values $value -}}
{{- if not (kindIs "map" $v) -}}{{- $hasValues = true -}}{{- end -}}
{{- end -}}
{{- if $hasValues }}

[{{ $sub }}]
{{- end -}}
{{- include "herald.toml.table" (dict "path" $sub "table" $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when a Redis CA is mounted from a Secret or a ConfigMap. */}}
{{- define "herald.redisCA" -}}
{{- if or .Values.redis.tlsCA.secretName .Values.redis.tlsCA.configMapName -}}true{{- end -}}
{{- end -}}

{{/* Settings that cannot work together fail the render with a clear message. */}}
{{- define "herald.validate" -}}
{{- $c := .Values.config -}}
{{- if eq $c.broker "redis" -}}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) -}}
{{- fail "config.broker is redis: set redis.url or redis.existingSecret" -}}
{{- end -}}
{{- if and .Values.redis.tlsCA.secretName .Values.redis.tlsCA.configMapName -}}
{{- fail "redis.tlsCA: set secretName or configMapName, not both" -}}
{{- end -}}
{{- $tlsSet := or (include "herald.redisCA" .) .Values.redis.tlsClientSecret $c.redis.tls_server_name -}}
{{- if and $tlsSet .Values.redis.url (not .Values.redis.existingSecret) (not (hasPrefix "rediss" .Values.redis.url)) -}}
{{- fail "redis.tlsCA, redis.tlsClientSecret and config.redis.tls_server_name need a rediss:// or rediss-cluster:// redis.url" -}}
{{- end -}}
{{- if and .Values.redis.passwordSecret.name (regexMatch "^[a-z-]+://[^/@]*:[^/@]+@" .Values.redis.url) -}}
{{- fail "redis.url holds a password and redis.passwordSecret is set: use one" -}}
{{- end -}}
{{- else -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled -}}
{{- fail "config.broker is memory, which serves exactly one node: set replicaCount: 1 and autoscaling.enabled: false, or use the redis broker" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.auth.existingSecret .Values.auth.create -}}
{{- fail "set either auth.existingSecret or auth.create, not both" -}}
{{- end -}}
{{- if .Values.auth.create -}}
{{- if and .Values.auth.tokenHmacSecretKey (lt (len .Values.auth.tokenHmacSecret) 32) -}}
{{- fail "auth.create: auth.tokenHmacSecret must be at least 32 bytes" -}}
{{- end -}}
{{- if and .Values.auth.apiKeyKey (not .Values.auth.apiKey) -}}
{{- fail "auth.create: set auth.apiKey, or auth.apiKeyKey: \"\" to disable the server API" -}}
{{- end -}}
{{- end -}}
{{- $hmac := and (include "herald.hasAuthSecret" .) .Values.auth.tokenHmacSecretKey -}}
{{- if not (or $hmac $c.token.rsa_public_key $c.token.ec_public_key $c.token.jwks_url $c.client.allow_anonymous) -}}
{{- fail "no way to verify tokens: set auth.existingSecret (with the key named by auth.tokenHmacSecretKey), config.token.rsa_public_key, config.token.ec_public_key or config.token.jwks_url, or config.client.allow_anonymous" -}}
{{- end -}}
{{- end -}}
