{{- define "logclass.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "logclass.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "logclass.vllmName" -}}
{{- printf "%s-vllm" (include "logclass.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "logclass.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: logclass
{{- end }}

{{- define "logclass.labels" -}}
{{ include "logclass.commonLabels" . }}
{{ include "logclass.selectorLabels" . }}
{{- end }}

{{- define "logclass.vllmLabels" -}}
{{ include "logclass.commonLabels" . }}
{{ include "logclass.vllmSelectorLabels" . }}
{{- end }}

{{- define "logclass.selectorLabels" -}}
app.kubernetes.io/name: {{ include "logclass.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "logclass.vllmSelectorLabels" -}}
app.kubernetes.io/name: {{ include "logclass.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: vllm
{{- end }}

{{/*
The chart's Valkey (store.enabled). The full name is cut to 46 characters first, so the
StatefulSet's name stays within the 52 its controller-revision-hash label allows and the headless
Service's never collides with the other one when names are long.
*/}}
{{- define "logclass.storeName" -}}
{{- printf "%s-store" (include "logclass.fullname" . | trunc 46 | trimSuffix "-") }}
{{- end }}

{{- define "logclass.storeHeadlessName" -}}
{{- printf "%s-headless" (include "logclass.storeName" .) }}
{{- end }}

{{- define "logclass.storeSelectorLabels" -}}
app.kubernetes.io/name: {{ include "logclass.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: store
{{- end }}

{{- define "logclass.storeLabels" -}}
{{ include "logclass.commonLabels" . }}
{{ include "logclass.storeSelectorLabels" . }}
{{- end }}

{{/* The Secret with the store's password: store.existingSecret, else the chart's own (store.enabled); empty: none. */}}
{{- define "logclass.storeSecret" -}}
{{- if .Values.store.existingSecret }}{{ .Values.store.existingSecret }}
{{- else if .Values.store.enabled }}{{ include "logclass.storeName" . }}
{{- end }}
{{- end }}

{{/* store.url the sidecars get: the chart's Valkey Service, else store.url; empty: no store. */}}
{{- define "logclass.storeUrl" -}}
{{- if .Values.store.enabled -}}
{{- printf "redis://%s.%s.svc:6379/0" (include "logclass.storeName" .) .Release.Namespace }}
{{- else if .Values.store.url -}}
{{- .Values.store.url }}
{{- end }}
{{- end }}

{{/* The store's password file: its own folder, mounted from the Secret into the logclass container alone. */}}
{{- define "logclass.storeDir" -}}/etc/logclass/store{{- end }}

{{/*
The password of the chart's own store Secret, base64: the one already in the cluster (an upgrade
must keep it: Valkey and every running sidecar hold it), else a new random one. Takes (dict "existing" <lookup result> "key" <data key>), so a test can hand it a Secret.
*/}}
{{- define "logclass.storePassword" -}}
{{- $data := (.existing | default dict).data | default dict }}
{{- if and (hasKey $data .key) (index $data .key) }}
{{- index $data .key }}
{{- else }}
{{- randAlphaNum 32 | b64enc }}
{{- end }}
{{- end }}

{{- define "logclass.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The ConfigMap's folder in the logclass container. A directory mount, never subPath: kubelet
refreshes a directory mount when the ConfigMap changes (atomically, through its ..data symlink)
and never a subPath one, and the sidecar's file watch rereads what kubelet wrote.
*/}}
{{- define "logclass.confDir" -}}/etc/logclass/conf{{- end }}

{{/* Where learnt templates are kept (learning.enabled): a writable volume, not the image. */}}
{{- define "logclass.learntDir" -}}/var/lib/logclass/learnt{{- end }}

{{- define "logclass.authSecret" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "logclass.fullname" .)) }}
{{- end }}

{{- define "logclass.adminAuthSecret" -}}
{{- .Values.adminAuth.existingSecret | default (printf "%s-admin-auth" (include "logclass.fullname" .)) }}
{{- end }}

{{/* The Admin service's token file: its own folder, so it is never in the callers' token's mount. */}}
{{- define "logclass.adminAuthDir" -}}/etc/logclass/admin-auth{{- end }}

{{/* The OpenAI-compatible URL the sidecar calls: the chart's vLLM Service, else llm.url. */}}
{{- define "logclass.llmUrl" -}}
{{- if .Values.vllm.enabled -}}
{{- printf "http://%s.%s.svc:%d/v1" (include "logclass.vllmName" .) .Release.Namespace (int .Values.vllm.port) }}
{{- else if .Values.llm.url -}}
{{- .Values.llm.url }}
{{- end }}
{{- end }}

{{- define "logclass.llmKeySecret" -}}
{{- if .Values.vllm.enabled }}{{ .Values.vllm.apiKeySecret.name }}{{ else }}{{ .Values.llm.apiKeySecret.name }}{{ end }}
{{- end }}

{{- define "logclass.llmKeyKey" -}}
{{- if .Values.vllm.enabled }}{{ .Values.vllm.apiKeySecret.key }}{{ else }}{{ .Values.llm.apiKeySecret.key }}{{ end }}
{{- end }}

{{/*
logclass config.yaml: .Values.config with the keys the chart manages set on top. Listen addresses
and the bundle path come from env (LOGCLASS_SERVER__LISTEN ...: they also override the image's), the
rest is here.
*/}}
{{- define "logclass.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := dict }}
{{- $interval := ternary .Values.reload.intervalSeconds 0 (eq .Values.reload.mode "watch") }}
{{- $_ := set $server "reload" (dict "watch_interval_s" $interval) }}
{{- if .Values.auth.enabled }}
{{- $_ := set $server "auth" (dict "token_file" "/etc/logclass/auth/token") }}
{{- end }}
{{- if .Values.adminAuth.enabled }}
{{- $_ := set $server "admin_auth" (dict "token_file" (printf "%s/token" (include "logclass.adminAuthDir" .))) }}
{{- end }}
{{- if .Values.metrics.authSecret.name }}
{{- $_ := set $server "metrics_auth" (dict "token_file" "/etc/logclass/metrics-auth/token") }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $tls := dict "cert_file" "/etc/logclass/tls/tls.crt" "key_file" "/etc/logclass/tls/tls.key" }}
{{- if .Values.tls.clientAuth }}{{ $_ := set $tls "client_ca_file" "/etc/logclass/tls/ca.crt" }}{{ end }}
{{- $_ := set $server "tls" $tls }}
{{- end }}
{{- $managed := dict }}
{{- $_ := set $managed "server" $server }}
{{- if .Values.rules }}
{{- $_ := set $managed "regex" (dict "rules_file" (printf "%s/rules.yaml" (include "logclass.confDir" .))) }}
{{- end }}
{{- if .Values.learning.enabled }}
{{- $_ := set $managed "memory" (dict "learnt_file" (printf "%s/learnt.jsonl" (include "logclass.learntDir" .))) }}
{{- end }}
{{- $storeUrl := include "logclass.storeUrl" . }}
{{- if $storeUrl }}
{{- $store := dict "url" $storeUrl "key_prefix" (.Values.store.keyPrefix | default .Release.Name) }}
{{- if include "logclass.storeSecret" . }}
{{- $_ := set $store "password_file" (printf "%s/password" (include "logclass.storeDir" .)) }}
{{- end }}
{{- $_ := set $managed "store" $store }}
{{- end }}
{{- $url := include "logclass.llmUrl" . }}
{{- if $url }}
{{- $llmServer := dict "url" $url }}
{{- $model := ternary .Values.vllm.servedModelName .Values.llm.model .Values.vllm.enabled }}
{{- if $model }}{{ $_ := set $llmServer "model" $model }}{{ end }}
{{- if include "logclass.llmKeySecret" . }}{{ $_ := set $llmServer "api_key_file" "/etc/logclass/llm/api-key" }}{{ end }}
{{- $_ := set $managed "llm" (dict "backend" "vllm" "server" $llmServer) }}
{{- else }}
{{- /* No server: the image has no llama.cpp; say so instead of relying on auto. */}}
{{- $_ := set $managed "llm" (dict "backend" "none") }}
{{- end }}
{{- if eq .Values.mode "daemonset" }}
{{- $upstreams := list }}
{{- range .Values.daemonset.relay.upstreams }}
{{- $upstream := deepCopy . }}
{{- if $.Values.daemonset.relay.upstreamSecret.name }}
{{- $_ := set $upstream "shared_key_file" "/etc/logclass/relay-upstream/shared_key" }}
{{- if .username }}{{ $_ := set $upstream "password_file" "/etc/logclass/relay-upstream/password" }}{{ end }}
{{- end }}
{{- $upstreams = append $upstreams $upstream }}
{{- end }}
{{- $relay := dict "upstreams" $upstreams "buffer" (dict "path" "/var/lib/logclass/relay") }}
{{- $_ := set $managed "relay" $relay }}
{{- end }}
{{- if .Values.otlp.enabled }}
{{- $otlp := .Values.otlp }}
{{- if not $otlp.upstream.endpoint }}
{{- fail "otlp.enabled needs otlp.upstream.endpoint: the OTLP receiver the tagged logs go to (e.g. http://otel-collector:4317)" }}
{{- end }}
{{- if and (eq $otlp.listen "all") (not .Values.networkPolicy.enabled) }}
{{- fail "otlp.listen all needs networkPolicy.enabled: the OTLP receivers have no TLS or token yet, the NetworkPolicy (networkPolicy.otlpFrom) is their only lock; or use otlp.listen loopback" }}
{{- end }}
{{- $upstream := dict "protocol" $otlp.upstream.protocol "endpoint" $otlp.upstream.endpoint }}
{{- $_ := set $managed "otlp" (dict "upstream" $upstream "buffer" (dict "path" "/var/lib/logclass/otlp")) }}
{{- end }}
{{- $merged := mustMergeOverwrite $cfg $managed }}
{{- toYaml $merged }}
{{- end }}

{{/*
What of the pod's configuration a live reload cannot apply: the rendered config less what the
sidecar swaps live (regex rules, routes, thresholds, the LLM prompt, labels and examples, relay
outputs), plus Fluent Bit's config (Fluent Bit does not watch its file). In watch mode its
checksum is the pod annotation, so exactly these changes roll the pods. Kept on the cautious side:
a key listed here that the sidecar could swap live costs a rolling restart, one missing from here
would leave the change unapplied (the sidecar refuses it, restart_required) until one.
*/}}
{{- define "logclass.restartOnly" -}}
{{- $cfg := include "logclass.config" . | fromYaml }}
{{- $_ := unset $cfg "regex" }}
{{- $_ := unset $cfg "router" }}
{{- $live := dict "memory" (list "min_rows" "min_purity") "embedding" (list "min_confidence" "label_min_confidence" "out_of_distribution") "llm" (list "instructions" "labels" "examples" "min_confidence") "relay" (list "output" "upstreams") }}
{{- range $section, $keys := $live }}
{{- if hasKey $cfg $section }}
{{- $keep := get $cfg $section }}
{{- range $keys }}{{ $_ := unset $keep . }}{{ end }}
{{- /* A section left empty hashes as if it had never been given. */}}
{{- if not $keep }}{{ $_ := unset $cfg $section }}{{ end }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- if eq .Values.mode "daemonset" }}
{{ include "logclass.fluentBitConf" . }}
{{- end }}
{{- end }}

{{/* probes.kind with auto resolved (values.yaml says why each). */}}
{{- define "logclass.probeKind" -}}
{{- $kind := .Values.probes.kind | default "auto" }}
{{- if ne $kind "auto" }}{{ $kind }}
{{- else if and .Values.ports.http (not (and .Values.tls.enabled .Values.tls.clientAuth)) }}http
{{- else if .Values.tls.enabled }}tcp
{{- else }}grpc
{{- end }}
{{- end }}

{{/* "true" when gRPC and HTTP listen on loopback (daemonset mode, daemonset.apiListen loopback). */}}
{{- define "logclass.loopbackApi" -}}
{{- if and (eq .Values.mode "daemonset") (eq (.Values.daemonset.apiListen | default "loopback") "loopback") }}true{{ end }}
{{- end }}

{{/*
Probes that run inside the container, for listeners on loopback (kubelet's own probes connect to
the pod IP). The HTTP ones ask /readyz and /healthz as kubelet would (any certificate accepted);
without HTTP, or with client certificates required, the gRPC port must accept a connection.
*/}}
{{- define "logclass.execProbes" -}}
{{- if and .Values.ports.http (not (and .Values.tls.enabled .Values.tls.clientAuth)) }}
{{- $scheme := ternary "https" "http" .Values.tls.enabled }}
{{- $get := "import os, ssl, sys, urllib.request; scheme, path = sys.argv[1:3]; port = os.environ['LOGCLASS_SERVER__HTTP_LISTEN'].rpartition(':')[2]; context = ssl._create_unverified_context() if scheme == 'https' else None; urllib.request.urlopen(f'{scheme}://127.0.0.1:{port}{path}', timeout=2, context=context)" }}
{{- $ready := dict "exec" (dict "command" (list "python" "-c" $get $scheme "/readyz")) }}
{{- $live := dict "exec" (dict "command" (list "python" "-c" $get $scheme "/healthz")) }}
{{- toYaml (dict "startup" $ready "liveness" $live "readiness" $ready) }}
{{- else }}
{{- $connect := "import os, socket; port = int(os.environ['LOGCLASS_SERVER__LISTEN'].rpartition(':')[2]); socket.create_connection(('127.0.0.1', port), timeout=2).close()" }}
{{- $probe := dict "exec" (dict "command" (list "python" "-c" $connect)) }}
{{- toYaml (dict "startup" $probe "liveness" $probe "readiness" $probe) }}
{{- end }}
{{- end }}

{{/* The logclass container's probes: {startup, liveness, readiness} -> handler. */}}
{{- define "logclass.probes" -}}
{{- $kind := include "logclass.probeKind" . }}
{{- if include "logclass.loopbackApi" . }}
{{- include "logclass.execProbes" . }}
{{- else if eq $kind "http" }}
{{- $scheme := ternary "HTTPS" "HTTP" .Values.tls.enabled }}
{{- $ready := dict "httpGet" (dict "path" "/readyz" "port" "http" "scheme" $scheme) }}
{{- $live := dict "httpGet" (dict "path" "/healthz" "port" "http" "scheme" $scheme) }}
{{- toYaml (dict "startup" $ready "liveness" $live "readiness" $ready) }}
{{- else }}
{{- $probe := dict "tcpSocket" (dict "port" "grpc") }}
{{- if eq $kind "grpc" }}
{{- $probe = dict "grpc" (dict "port" (int .Values.ports.grpc) "service" "logclass.v1.LogClassifier") }}
{{- end }}
{{- toYaml (dict "startup" $probe "liveness" $probe "readiness" $probe) }}
{{- end }}
{{- end }}

{{/* The logclass container, shared by the DaemonSet and the Deployment. */}}
{{- define "logclass.container" -}}
- name: logclass
  image: {{ include "logclass.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  env:
    - name: LOGCLASS_CONFIG
      value: {{ include "logclass.confDir" . }}/config.yaml
    {{- /* Kubelet probes connect to the pod IP: on all interfaces unless the API is loopback's (exec probes). */}}
    {{- $host := ternary "127.0.0.1" "0.0.0.0" (eq (include "logclass.loopbackApi" .) "true") }}
    - name: LOGCLASS_SERVER__LISTEN
      value: "{{ $host }}:{{ .Values.ports.grpc }}"
    - name: LOGCLASS_SERVER__METRICS_LISTEN
      value: "0.0.0.0:{{ .Values.ports.metrics }}"
    # Set either way: off has to override the image's listener.
    - name: LOGCLASS_SERVER__HTTP_LISTEN
      value: {{ if .Values.ports.http }}"{{ $host }}:{{ .Values.ports.http }}"{{ else }}"null"{{ end }}
    - name: LOGCLASS_MODEL__BUNDLE
      value: {{ ternary (printf "%s/%s" .Values.model.mountPath .Values.model.subPath) .Values.model.imagePath (eq .Values.model.source "volume") | quote }}
    {{- if eq .Values.mode "daemonset" }}
    - name: LOGCLASS_RELAY__ENABLED
      value: "true"
    - name: LOGCLASS_RELAY__LISTEN
      value: "127.0.0.1:{{ .Values.ports.forward }}"
    {{- end }}
    {{- if .Values.otlp.enabled }}
    {{- $otlpHost := ternary "0.0.0.0" "127.0.0.1" (eq .Values.otlp.listen "all") }}
    - name: LOGCLASS_OTLP__ENABLED
      value: "true"
    - name: LOGCLASS_OTLP__GRPC_LISTEN
      value: {{ if .Values.otlp.ports.grpc }}"{{ $otlpHost }}:{{ .Values.otlp.ports.grpc }}"{{ else }}"null"{{ end }}
    - name: LOGCLASS_OTLP__HTTP_LISTEN
      value: {{ if .Values.otlp.ports.http }}"{{ $otlpHost }}:{{ .Values.otlp.ports.http }}"{{ else }}"null"{{ end }}
    {{- end }}
    - name: HOME
      value: /tmp
    - name: XDG_CACHE_HOME
      value: /tmp/cache
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- if not (include "logclass.loopbackApi" .) }}
    - {name: grpc, containerPort: {{ .Values.ports.grpc }}, protocol: TCP}
    {{- end }}
    - {name: metrics, containerPort: {{ .Values.ports.metrics }}, protocol: TCP}
    {{- if and .Values.ports.http (not (include "logclass.loopbackApi" .)) }}
    - {name: http, containerPort: {{ .Values.ports.http }}, protocol: TCP}
    {{- end }}
    {{- if include "logclass.otlpExposed" . }}
    {{- if .Values.otlp.ports.grpc }}
    - {name: otlp-grpc, containerPort: {{ .Values.otlp.ports.grpc }}, protocol: TCP}
    {{- end }}
    {{- if .Values.otlp.ports.http }}
    - {name: otlp-http, containerPort: {{ .Values.otlp.ports.http }}, protocol: TCP}
    {{- end }}
    {{- end }}
  {{- $probes := include "logclass.probes" . | fromYaml }}
  startupProbe:
    {{- toYaml (merge $probes.startup .Values.probes.startup) | nindent 4 }}
  livenessProbe:
    {{- toYaml (merge $probes.liveness .Values.probes.liveness) | nindent 4 }}
  readinessProbe:
    {{- toYaml (merge $probes.readiness .Values.probes.readiness) | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: {{ include "logclass.confDir" . }}, readOnly: true}
    - {name: tmp, mountPath: /tmp}
    {{- if eq .Values.model.source "volume" }}
    - {name: model, mountPath: {{ .Values.model.mountPath }}, readOnly: true}
    {{- end }}
    {{- if .Values.auth.enabled }}
    - {name: auth, mountPath: /etc/logclass/auth, readOnly: true}
    {{- end }}
    {{- if .Values.adminAuth.enabled }}
    - {name: admin-auth, mountPath: {{ include "logclass.adminAuthDir" . }}, readOnly: true}
    {{- end }}
    {{- if .Values.tls.enabled }}
    - {name: tls, mountPath: /etc/logclass/tls, readOnly: true}
    {{- end }}
    {{- if include "logclass.llmKeySecret" . }}
    - {name: llm-key, mountPath: /etc/logclass/llm, readOnly: true}
    {{- end }}
    {{- if .Values.metrics.authSecret.name }}
    - {name: metrics-auth, mountPath: /etc/logclass/metrics-auth, readOnly: true}
    {{- end }}
    {{- if eq .Values.mode "daemonset" }}
    - {name: relay-buffer, mountPath: /var/lib/logclass/relay}
    {{- if .Values.daemonset.relay.upstreamSecret.name }}
    - {name: relay-upstream, mountPath: /etc/logclass/relay-upstream, readOnly: true}
    {{- end }}
    {{- end }}
    {{- if .Values.otlp.enabled }}
    - {name: otlp-buffer, mountPath: /var/lib/logclass/otlp}
    {{- end }}
    {{- if .Values.learning.enabled }}
    - {name: learnt, mountPath: {{ include "logclass.learntDir" . }}}
    {{- end }}
    {{- if and (include "logclass.storeUrl" .) (include "logclass.storeSecret" .) }}
    - {name: store-password, mountPath: {{ include "logclass.storeDir" . }}, readOnly: true}
    {{- end }}
{{- end }}

{{/* Volumes of the logclass container. */}}
{{- define "logclass.volumes" -}}
- name: config
  configMap:
    name: {{ include "logclass.fullname" . }}
- name: tmp
  emptyDir: {sizeLimit: {{ .Values.tmpSizeLimit }}}
{{- if .Values.learning.enabled }}
- name: learnt
  {{- if .Values.learning.volume }}
  {{- toYaml .Values.learning.volume | nindent 2 }}
  {{- else if eq .Values.mode "daemonset" }}
  hostPath: {path: {{ printf "%s/%s" .Values.learning.hostPath .Release.Name }}, type: DirectoryOrCreate}
  {{- else }}
  emptyDir: {sizeLimit: {{ .Values.learning.sizeLimit }}}
  {{- end }}
{{- end }}
{{- if .Values.otlp.enabled }}
- name: otlp-buffer
  {{- if .Values.otlp.buffer.volume }}
  {{- toYaml .Values.otlp.buffer.volume | nindent 2 }}
  {{- else if eq .Values.mode "daemonset" }}
  hostPath: {path: {{ printf "%s/%s" .Values.otlp.buffer.hostPath .Release.Name }}, type: DirectoryOrCreate}
  {{- else }}
  emptyDir: {sizeLimit: {{ .Values.otlp.buffer.sizeLimit }}}
  {{- end }}
{{- end }}
{{- if eq .Values.model.source "volume" }}
- name: model
  {{- toYaml .Values.model.volume | nindent 2 }}
{{- end }}
{{- if .Values.auth.enabled }}
- name: auth
  secret:
    secretName: {{ include "logclass.authSecret" . }}
    items: [{key: {{ .Values.auth.key }}, path: token}]
{{- end }}
{{- if .Values.adminAuth.enabled }}
- name: admin-auth
  secret:
    secretName: {{ include "logclass.adminAuthSecret" . }}
    items: [{key: {{ .Values.adminAuth.key }}, path: token}]
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
{{- end }}
{{- if include "logclass.llmKeySecret" . }}
- name: llm-key
  secret:
    secretName: {{ include "logclass.llmKeySecret" . }}
    items: [{key: {{ include "logclass.llmKeyKey" . }}, path: api-key}]
{{- end }}
{{- if .Values.metrics.authSecret.name }}
- name: metrics-auth
  secret:
    secretName: {{ .Values.metrics.authSecret.name }}
    items: [{key: {{ .Values.metrics.authSecret.key }}, path: token}]
{{- end }}
{{- if and (include "logclass.storeUrl" .) (include "logclass.storeSecret" .) }}
- name: store-password
  secret:
    secretName: {{ include "logclass.storeSecret" . }}
    items: [{key: {{ .Values.store.passwordKey }}, path: password}]
    {{- if .Values.podSecurityContext.fsGroup }}
    # Owner and group only: kubelet gives the file to fsGroup, the sidecar's group. Without an
    # fsGroup the file stays root's, so the default mode has to leave it readable.
    defaultMode: 0440
    {{- end }}
{{- end }}
{{- if and (eq .Values.mode "daemonset") .Values.daemonset.relay.upstreamSecret.name }}
{{- $secret := .Values.daemonset.relay.upstreamSecret }}
- name: relay-upstream
  secret:
    secretName: {{ $secret.name }}
    items:
      - {key: {{ $secret.sharedKeyKey }}, path: shared_key}
      {{- if include "logclass.upstreamPasswords" . }}
      - {key: {{ $secret.passwordKey }}, path: password}
      {{- end }}
{{- end }}
{{- end }}

{{/* "true" when an upstream logs in with a username (its password comes from upstreamSecret). */}}
{{- define "logclass.upstreamPasswords" -}}
{{- range .Values.daemonset.relay.upstreams }}{{ if .username }}true{{ end }}{{ end }}
{{- end }}

{{- define "logclass.podAnnotations" -}}
{{- if eq .Values.reload.mode "watch" }}
checksum/restart-only: {{ include "logclass.restartOnly" . | sha256sum }}
{{- else }}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}
{{- if .Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.metrics | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "logclass.podCommon" -}}
serviceAccountName: {{ include "logclass.serviceAccountName" . }}
# No API token in every container: daemonset mode mounts one into Fluent Bit alone.
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The pods' ServiceAccount: the chart's, or an existing one (the namespace's default if unnamed). */}}
{{- define "logclass.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "logclass.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/* Cluster-scoped names carry the namespace: two releases of one name in two namespaces. */}}
{{- define "logclass.clusterRoleName" -}}
{{- printf "%s-%s" .Release.Namespace (include "logclass.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/*
The tail input's tag for a file: "kube." + its path with "/" as "."; the kubernetes filter strips
this prefix (the folder of daemonset.fluentBit.logPath) to read pod, namespace and container.
*/}}
{{- define "logclass.kubeTagPrefix" -}}
{{- printf "kube.%s." (dir .Values.daemonset.fluentBit.logPath | trimPrefix "/" | replace "/" ".") }}
{{- end }}

{{/* "true" when the OTLP receivers listen on the pod network (otlp.enabled, otlp.listen all). */}}
{{- define "logclass.otlpExposed" -}}
{{- if and .Values.otlp.enabled (eq .Values.otlp.listen "all") }}true{{ end }}
{{- end }}
