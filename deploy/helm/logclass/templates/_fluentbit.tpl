{{/*
Fluent Bit classic config of the daemonset: container logs -> pod metadata (kubernetes filter) -> forward to the logclass relay in the
same pod (127.0.0.1), with acks, so a record leaves the node's buffer only once the relay has
queued it on disk. Same sections and keys as deploy/fluent-bit/ (tests/test_helm_chart.py checks).
*/}}
{{- define "logclass.fluentBitConf" -}}
{{- $fb := .Values.daemonset.fluentBit -}}
{{- $k8s := $fb.kubernetes -}}
[SERVICE]
    Flush                     1
    Log_Level                 {{ $fb.logLevel }}
    storage.path              /var/lib/fluent-bit/storage
    storage.sync              full
    storage.checksum          on
    storage.backlog.mem_limit 32M
    storage.max_chunks_up     128
    scheduler.base            2
    scheduler.cap             60
    HTTP_Server               On
    HTTP_Listen               0.0.0.0
    HTTP_Port                 2020

[INPUT]
    Name              tail
    Tag               kube.*
    Path              {{ $fb.logPath }}
    multiline.parser  docker, cri
    DB                /var/lib/fluent-bit/tail.db
    storage.type      filesystem
    Skip_Long_Lines   On
    Refresh_Interval  5

[FILTER]
    Name                  kubernetes
    Match                 kube.*
    Kube_URL              https://kubernetes.default.svc:443
    Kube_Tag_Prefix       {{ include "logclass.kubeTagPrefix" . }}
    Merge_Log             On
    Merge_Log_Key         {{ $k8s.mergeLogKey }}
    Keep_Log              On
    K8S-Logging.Parser    On
    K8S-Logging.Exclude   On
    Labels                {{ ternary "On" "Off" $k8s.labels }}
    Annotations           {{ ternary "On" "Off" $k8s.annotations }}
    Namespace_Labels      {{ ternary "On" "Off" $k8s.namespaceMetadata }}
    Namespace_Annotations {{ ternary "On" "Off" $k8s.namespaceMetadata }}
    Use_Kubelet           Off
    Buffer_Size           {{ $k8s.bufferSize }}

[OUTPUT]
    Name                            forward
    Match                           kube.*
    Host                            127.0.0.1
    Port                            {{ .Values.ports.forward }}
    Require_ack_response            On
    Retry_Limit                     no_limits
    Retain_Metadata_In_Forward_Mode false
    storage.total_limit_size        {{ $fb.storageTotalLimit }}
    net.connect_timeout             10
{{- end }}
