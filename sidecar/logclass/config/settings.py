"""The configuration as typed values: one frozen dataclass per section and sub-section.

These types are the one description of the configuration's shape: ``schema.json`` is generated
from them (``make schema``), and ``config.load`` validates against it and then builds a
``Settings``. Values live in ``defaults.yaml`` only: no field has a default here, so a key missing
from the defaults is a schema error, not a silent code default. Constraints ride on the types as
``Annotated[..., Json(...)]`` (JSON Schema keywords, ``core.typed``); ``MayOmit(...)`` marks the
only keys a user may leave out: those of list items (an upstream, a user), which defaults.yaml
cannot hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from logclass.core.typed import Json, MayOmit, doc, parse, to_plain

PositiveInt = Annotated[int, Json(minimum=1)]
NonNegativeInt = Annotated[int, Json(minimum=0)]
NonNegativeFloat = Annotated[float, Json(minimum=0)]
PositiveFloat = Annotated[float, Json(exclusiveMinimum=0)]
Probability = Annotated[float, Json(minimum=0, maximum=1)]
NonEmptyStr = Annotated[str, Json(minLength=1)]
Address = Annotated[str, Json(pattern="^.+:[0-9]{1,5}$")]
# An empty host (":9464") means every interface.
MetricsAddress = Annotated[str, Json(pattern="^.*:[0-9]{1,5}$")]
TierName = Literal["regex", "memory", "embedding", "llm"]
LlmBackendName = Literal["auto", "none", "vllm", "llamacpp"]
FilePath = str


@dataclass(frozen=True, slots=True)
class ModelSettings:
    bundle: Annotated[
        FilePath | None, doc("model bundle directory; null: the default bundle shipped inside the package")
    ]


@dataclass(frozen=True, slots=True)
class RouterSettings:
    tiers: Annotated[
        tuple[TierName, ...], Json(uniqueItems=True, minItems=1), doc("tiers cheapest first; regex, then memory first")
    ]
    source_routes: Annotated[
        Mapping[str, TierName] | None,
        doc("source -> first tier for its records; null: the model bundle's routes; {}: none"),
    ]
    fallback_label: Annotated[NonEmptyStr, doc("label of records no tier decided with confidence (tier none)")]


@dataclass(frozen=True, slots=True)
class RegexSettings:
    rules_file: Annotated[
        FilePath | None, doc("YAML list of rules; null: the rules the bundle was trained with, else the built-in ones")
    ]


@dataclass(frozen=True, slots=True)
class MemorySettings:
    min_rows: Annotated[PositiveInt | None, doc("rows a training template needs to be answered; null: the bundle's")]
    min_purity: Annotated[
        Annotated[float, Json(exclusiveMinimum=0.5, maximum=1)] | None,
        doc("share of its rows the template's top label needs; null: the bundle's"),
    ]
    learnt_file: Annotated[
        FilePath | None,
        doc("append-only JSONL of learnt templates (LLM answers, corrections); null: in memory only"),
    ]
    learnt_max_lessons: Annotated[
        PositiveInt,
        doc("most learnt templates kept; past it the least recently taught LLM lesson goes (corrections stay)"),
    ]
    learnt_file_max_bytes: Annotated[
        Annotated[int, Json(minimum=65536)],
        doc("the learnt file is compacted (one line per live lesson) when it grows past this and twice its lessons"),
    ]


@dataclass(frozen=True, slots=True)
class Mask:
    name: Annotated[str, Json(pattern="^[A-Za-z_][A-Za-z0-9_]*$"), doc("regex group name of the mask")]
    pattern: Annotated[NonEmptyStr, doc("regular expression of what the mask replaces")]
    replace: Annotated[str, doc("text that replaces a match in the template")]


@dataclass(frozen=True, slots=True)
class TemplatesSettings:
    cache_size: Annotated[NonNegativeInt, doc("LRU capacity of the (source, template) cache; 0 disables it")]
    exact_cache_size: Annotated[NonNegativeInt, doc("LRU capacity of the (source, message) cache; 0 disables it")]
    masks: Annotated[tuple[Mask, ...], doc("masks turning a message into its template; the first listed wins a tie")]


@dataclass(frozen=True, slots=True)
class EmbeddingSettings:
    model_path: Annotated[FilePath | None, doc("sentence-transformers folder; null: the packaged all-MiniLM-L6-v2")]
    backend: Annotated[
        Literal["auto", "torch", "onnx", "onnx-int8"],
        doc("encoder backend; auto: onnx-int8 on CPU and torch on CUDA for training, the bundle's family to serve"),
    ]
    device: Annotated[str, Json(pattern="^(auto|cpu|cuda(:[0-9]+)?)$"), doc("auto: CUDA when available, else CPU")]
    batch_size: Annotated[
        Annotated[int, Json(minimum=1, maximum=4096)] | Literal["auto"],
        doc("most texts per forward pass; auto: 32 on CPU, 256 on CUDA"),
    ]
    batch_tokens: Annotated[
        Annotated[int, Json(minimum=8, maximum=1048576)] | Literal["auto"],
        doc("most padded tokens per forward pass; auto: 2048 on CPU, 32768 on CUDA"),
    ]
    max_seq_length: Annotated[int, Json(minimum=8, maximum=512), doc("tokens per message")]
    min_confidence: Annotated[Probability | None, doc("below this probability a record escalates; null: the bundle's")]
    label_min_confidence: Annotated[
        Mapping[str, Probability] | None, doc("per-label overrides of min_confidence; null: the bundle's")
    ]
    out_of_distribution: Annotated[bool, doc("escalate records unlike every training template of their label")]
    threads: Annotated[
        Annotated[int, Json(minimum=1, maximum=1024)] | Literal["auto"],
        doc("encoder intra-op threads on CPU; auto: all cores but one (at least 1)"),
    ]
    cache_dir: Annotated[FilePath | None, doc("where ONNX exports are kept; null: $XDG_CACHE_HOME/logclass/encoders")]


@dataclass(frozen=True, slots=True)
class LlmExample:
    source: str
    message: NonEmptyStr
    label: NonEmptyStr


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    failures: Annotated[PositiveInt, doc("consecutive failures that open the circuit")]
    cooldown_s: Annotated[PositiveFloat, doc("how long an open circuit skips the server before one probe")]


@dataclass(frozen=True, slots=True)
class LlmServerSettings:
    url: Annotated[
        Annotated[str, Json(pattern="^https?://")] | None,
        doc("base URL of the OpenAI-compatible API, e.g. http://vllm:8000/v1; null: no server"),
    ]
    model: Annotated[str | None, doc("model name as the server knows it; null: the first model it lists")]
    api_key: Annotated[str | None, doc("bearer key; prefer api_key_file; never logged")]
    api_key_file: Annotated[FilePath | None, doc("file holding the bearer key (a mounted Secret)")]
    request_timeout_ms: Annotated[PositiveInt, doc("one HTTP call; retries are on top")]
    retries: Annotated[NonNegativeInt, doc("further attempts after a failed call")]
    backoff_ms: Annotated[NonNegativeInt, doc("first backoff between attempts; doubles each time")]
    circuit: CircuitSettings
    constrain: Annotated[
        Literal["choice", "json_schema"],
        doc("choice: vLLM structured outputs; json_schema: response_format, for other servers"),
    ]


@dataclass(frozen=True, slots=True)
class LlamaCppSettings:
    model: Annotated[NonEmptyStr, doc("qwen2.5-coder-1.5b, smollm2-135m, or a path to a .gguf file")]
    threads: Annotated[NonNegativeInt, doc("CPU threads for inference; 0: all cores but one (at least one)")]
    context_tokens: Annotated[int, Json(minimum=256), doc("context window: prompt plus the longest line")]
    cache_dir: Annotated[FilePath | None, doc("where assembled models are kept; null: $XDG_CACHE_HOME/logclass/models")]


@dataclass(frozen=True, slots=True)
class LlmSettings:
    backend: Annotated[
        LlmBackendName,
        doc("auto: vllm when llm.server.url is set, else llamacpp when installed, else none"),
    ]
    min_confidence: Annotated[Probability, doc("answers below this confidence count as undecided")]
    learn_min_confidence: Annotated[
        Probability, doc("answers below this confidence answer their template here but are not learnt")
    ]
    max_concurrency: Annotated[PositiveInt, doc("questions in flight at once in the LLM lane")]
    teacher_file: Annotated[
        FilePath | None, doc("JSONL file of the LLM's decisions, for logclass train --extra; null: off")
    ]
    max_message_chars: Annotated[PositiveInt, doc("longer log lines are truncated in the prompt")]
    instructions: Annotated[NonEmptyStr, doc("the system prompt's instructions")]
    labels: Annotated[
        Mapping[str, NonEmptyStr] | None,
        Json(minProperties=1),
        doc("label -> one-line description; null: the bundle's label set"),
    ]
    examples: Annotated[tuple[LlmExample, ...] | None, doc("worked examples in the prompt; null: the bundle's")]
    server: LlmServerSettings
    llamacpp: LlamaCppSettings


@dataclass(frozen=True, slots=True)
class BatchSettings:
    max_records: Annotated[PositiveInt, doc("most templates in one embedding batch")]
    max_batch_ms: Annotated[
        NonNegativeFloat,
        doc("compute budget of one embedding batch, from the measured cost per token; 0: max_records only"),
    ]
    max_wait_ms: Annotated[float, Json(minimum=0, maximum=1000), doc("once a template waits, how long for more")]


@dataclass(frozen=True, slots=True)
class LaneQueueSettings:
    max_queue: Annotated[
        PositiveInt, doc("templates waiting or running in the lane; past it RESOURCE_EXHAUSTED names the lane")
    ]
    max_caller_share: Annotated[
        Annotated[float, Json(exclusiveMinimum=0, maximum=1)],
        doc("of max_queue one caller may hold while other callers have templates in the lane"),
    ]


@dataclass(frozen=True, slots=True)
class LanesSettings:
    embedding: LaneQueueSettings
    llm: LaneQueueSettings


@dataclass(frozen=True, slots=True)
class ServerTlsSettings:
    cert_file: Annotated[FilePath | None, doc("PEM certificate; with key_file turns TLS on")]
    key_file: Annotated[FilePath | None, doc("PEM private key")]
    client_ca_file: Annotated[FilePath | None, doc("CA of client certificates; given: clients need one (mTLS)")]


@dataclass(frozen=True, slots=True)
class ServerAuthSettings:
    token: Annotated[str | None, doc("bearer token callers must send; prefer token_file; never logged")]
    token_file: Annotated[FilePath | None, doc("file holding the bearer token (a mounted Secret)")]


@dataclass(frozen=True, slots=True)
class ReloadSettings:
    watch_interval_s: Annotated[
        NonNegativeFloat,
        doc("poll the config, rules and bundle files this often and hot-reload on change; 0: off (SIGHUP still does)"),
    ]


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: Annotated[Address | None, doc("host:port for gRPC; null: none")]
    unix_socket: Annotated[NonEmptyStr | None, doc("also (or only) listen on this unix socket path; null: none")]
    max_records_per_request: Annotated[PositiveInt, doc("requests with more records get INVALID_ARGUMENT")]
    max_request_bytes: Annotated[
        int, Json(minimum=1024), doc("larger messages are refused by gRPC, larger JSON bodies by HTTP (413)")
    ]
    inline_budget_ms: Annotated[
        NonNegativeInt, doc("how long a request waits for model answers unless it asks otherwise; then tier pending")
    ]
    deadline_margin_ms: Annotated[NonNegativeInt, doc("answer this long before the caller's gRPC deadline")]
    max_wait_ms: Annotated[
        PositiveInt, doc("longest a request without a deadline (HTTP; gRPC without one) waits, waitForAll included")
    ]
    batch: BatchSettings
    lanes: LanesSettings
    grace_seconds: Annotated[NonNegativeFloat, doc("on SIGTERM/SIGINT, how long in-flight requests get to finish")]
    reload: ReloadSettings
    tls: ServerTlsSettings
    auth: ServerAuthSettings
    admin_auth: Annotated[
        ServerAuthSettings,
        doc("bearer token of the Admin service (Reload, Feedback), not server.auth's; no token: no Admin service"),
    ]
    log_format: Annotated[Literal["text", "json"], doc("log lines as text or one JSON object per line")]
    metrics_listen: Annotated[MetricsAddress | None, doc("host:port of Prometheus /metrics; null: off")]
    metrics_auth: Annotated[ServerAuthSettings, doc("bearer token Prometheus must send for /metrics; none: open")]
    metrics_tls: Annotated[bool, doc("serve /metrics over TLS with server.tls's certificate")]
    http_listen: Annotated[Address | None, doc("host:port of the HTTP API and web console; null: off")]
    http_max_connections: Annotated[PositiveInt, doc("HTTP connections open at once; past it new requests get 503")]
    http_header_timeout_s: Annotated[
        PositiveFloat, doc("a request's headers must arrive within this long (slow clients are closed)")
    ]
    max_concurrent_uploads: Annotated[
        PositiveInt, doc("CSV uploads at once (each spooled to disk up to max_upload_bytes); past it 429")
    ]
    max_upload_bytes: Annotated[
        int, Json(minimum=1024), doc("largest CSV upload over HTTP (POST /classify, /v1/report); larger get 413")
    ]


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    max_message_bytes: Annotated[PositiveInt, doc("longer messages (UTF-8 bytes) get error message_too_long")]
    max_source_bytes: Annotated[PositiveInt, doc("longer sources (UTF-8 bytes) get error source_too_long")]


NullableKey = Annotated[NonEmptyStr | None, doc("record key to write; null: not written")]


@dataclass(frozen=True, slots=True)
class RelayOutputSettings:
    label_key: NullableKey
    tier_key: NullableKey
    confidence_key: NullableKey
    fallback_reason_key: NullableKey
    error_key: NullableKey


@dataclass(frozen=True, slots=True)
class RelayUser:
    username: NonEmptyStr
    password: str


@dataclass(frozen=True, slots=True)
class RelayAuthSettings:
    shared_key: Annotated[str | None, doc("handshake key senders must know; prefer shared_key_file; never logged")]
    shared_key_file: Annotated[FilePath | None, doc("file holding the shared key (a mounted Secret)")]
    users: Annotated[tuple[RelayUser, ...], doc("users senders authenticate as, besides the shared key")]


@dataclass(frozen=True, slots=True)
class RelayBufferSettings:
    path: Annotated[FilePath | None, doc("directory of queued chunks; null: $XDG_STATE_HOME/logclass/relay")]
    max_bytes: Annotated[int, Json(minimum=65536), doc("bound on queued bytes; when full the relay stops acking")]
    full_wait_s: Annotated[NonNegativeFloat, doc("how long a request waits for room before its connection closes")]


OptionalPath = Annotated[FilePath | None, MayOmit(None)]
OptionalStr = Annotated[str | None, MayOmit(None)]


@dataclass(frozen=True, slots=True)
class UpstreamTlsSettings:
    ca_file: OptionalPath
    cert_file: OptionalPath
    key_file: OptionalPath
    verify: Annotated[bool, MayOmit(True), doc("check the upstream's certificate (default true)")]
    server_name: OptionalStr


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    host: NonEmptyStr
    port: Annotated[int, Json(minimum=1, maximum=65535)]
    shared_key: OptionalStr
    shared_key_file: OptionalPath
    username: OptionalStr
    password: OptionalStr
    password_file: OptionalPath
    tls: Annotated[UpstreamTlsSettings | None, MayOmit(None), doc("absent or null: plain TCP")]


@dataclass(frozen=True, slots=True)
class RetrySettings:
    initial_ms: Annotated[PositiveInt, doc("first backoff after an upstream failure; doubles each time")]
    max_ms: Annotated[PositiveInt, doc("longest backoff")]


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    ack_timeout_s: Annotated[PositiveFloat, doc("no ack for a chunk within this long: reconnect and resend")]
    connect_timeout_s: PositiveFloat
    max_inflight_chunks: Annotated[PositiveInt, doc("chunks written on one connection before awaiting their acks")]
    max_chunk_bytes: Annotated[int, Json(minimum=1024), doc("requests of one tag are merged up to this size")]
    compress: Annotated[Literal["none", "gzip"], doc("gzip: send CompressedPackedForward")]
    retry: RetrySettings
    failback_s: Annotated[PositiveFloat, doc("on a fallback upstream, go back to the preferred ones after this long")]
    dead_letter_after: Annotated[
        PositiveInt, doc("refusals of a chunk sent alone, the next chunk getting through, before it is set aside")
    ]


@dataclass(frozen=True, slots=True)
class OptOutCondition:
    key: Annotated[NonEmptyStr, doc("record key path, e.g. $.kubernetes.annotations['logclass.io/classify']")]
    equals: Annotated[str, doc("value that opts the record out, compared as text ignoring case")]


@dataclass(frozen=True, slots=True)
class RelayHoldSettings:
    max_s: Annotated[
        NonNegativeFloat,
        doc("a new template's records wait in the buffer this long for its label, then leave pending; 0: off"),
    ]
    llm_max_s: Annotated[
        NonNegativeFloat | None,
        doc("the same for sources routed straight to the LLM (router.source_routes); null: max_s"),
    ]
    keep_order: Annotated[bool, doc("true: records behind a held one from the same tag wait too, keeping order")]
    max_bytes: Annotated[
        int, Json(minimum=65536), doc("bound on held bytes (within buffer.max_bytes); past it records leave pending")
    ]


@dataclass(frozen=True, slots=True)
class RelaySectionSettings:
    enabled: Annotated[bool, doc("also run the relay inside logclass serve")]
    listen: Annotated[Address, doc("host:port of the Forward server")]
    udp_heartbeat: Annotated[bool, doc("answer UDP heartbeats on the same port")]
    max_request_bytes: Annotated[int, Json(minimum=1024), doc("largest request after gzip inflation")]
    max_request_objects: Annotated[
        Annotated[int, Json(minimum=64)], doc("arrays and maps (elements included) one request decodes into")
    ]
    max_container_len: Annotated[
        Annotated[int, Json(minimum=16)], doc("longest array or map in a request (Forward mode: events)")
    ]
    max_connections: Annotated[PositiveInt, doc("sender connections open at once; more wait")]
    idle_timeout_s: Annotated[NonNegativeFloat, doc("close a connection silent this long; 0: never")]
    classify: Annotated[bool, doc("false: forward records untouched")]
    message_key: Annotated[NonEmptyStr, doc("record key of the log line; nested: $.a.b or $['a']['b']")]
    source_key: Annotated[
        NonEmptyStr | tuple[NonEmptyStr, ...] | None,
        doc("record key paths of the source, first non-empty string wins; none found: `source`, else the tag"),
    ]
    source: Annotated[NonEmptyStr | None, doc("source of records none of source_key finds; null: the Forward tag")]
    opt_out: Annotated[
        tuple[OptOutCondition, ...],
        doc("records matching any condition are forwarded untouched, never classified"),
    ]
    output: RelayOutputSettings
    fallback_label: Annotated[
        NonEmptyStr | None,
        doc("label (tier fallback) of records not classified in time; null: router.fallback_label"),
    ]
    tag_missing_message: Annotated[bool, doc("true: records without the message key get fallback_label")]
    budget_ms: Annotated[
        NonNegativeInt | None,
        doc("how long the relay waits for model answers per read; null: 0 with the hold, else server.inline_budget_ms"),
    ]
    classify_timeout_ms: Annotated[PositiveInt, doc("longest wait for the pipeline per read, then fallback_label")]
    hold: RelayHoldSettings
    hostname: Annotated[NonEmptyStr | None, doc("hostname given in handshakes; null: the host's")]
    auth: RelayAuthSettings
    tls: ServerTlsSettings
    buffer: RelayBufferSettings
    upstreams: Annotated[tuple[UpstreamSettings, ...], doc("next hops in order of preference")]
    forward: ForwardSettings
    metrics_listen: Annotated[MetricsAddress | None, doc("host:port of /metrics of logclass relay; null: off")]


AttributeLevel = Annotated[
    Literal["resource", "scope", "record"],
    doc("where the attribute is: the resource, the instrumentation scope or the LogRecord"),
]
AttributeName = Annotated[NonEmptyStr, doc("attribute key, e.g. service.name (dots are part of the name)")]


@dataclass(frozen=True, slots=True)
class OtlpAttributeKey:
    level: AttributeLevel
    key: AttributeName


@dataclass(frozen=True, slots=True)
class OtlpOptOutCondition:
    level: AttributeLevel
    key: AttributeName
    equals: Annotated[str, doc("value that opts the record out, compared as text ignoring case")]


NullableAttribute = Annotated[NonEmptyStr | None, doc("LogRecord attribute to write; null: not written")]


@dataclass(frozen=True, slots=True)
class OtlpAttributesSettings:
    label: NullableAttribute
    confidence: Annotated[NonEmptyStr | None, doc("LogRecord attribute to write (a double); null: not written")]
    tier: NullableAttribute
    template_id: NullableAttribute
    template: Annotated[NonEmptyStr | None, doc("LogRecord attribute of the masked message; null: not written")]


@dataclass(frozen=True, slots=True)
class OtlpUpstreamTlsSettings:
    ca_file: Annotated[
        FilePath | None, doc("PEM CA the upstream's certificate is checked against; null: the system CAs")
    ]
    cert_file: Annotated[FilePath | None, doc("PEM client certificate shown to the upstream (mTLS), with key_file")]
    key_file: Annotated[FilePath | None, doc("PEM private key of cert_file")]


@dataclass(frozen=True, slots=True)
class OtlpUpstreamSettings:
    protocol: Annotated[Literal["grpc", "http"], doc("OTLP/gRPC (LogsService/Export) or OTLP/HTTP (POST /v1/logs)")]
    endpoint: Annotated[
        str | None,
        Json(pattern="^https?://[^/?#]+(/[^?#]*)?$"),
        doc("http:// or https:// (TLS) URL of the upstream; OTLP/HTTP posts to {endpoint}/v1/logs; null: none"),
    ]
    timeout_ms: Annotated[PositiveInt, doc("one export attempt not answered within this long fails (retryable)")]
    retries: Annotated[NonNegativeInt, doc("retries of a retryable failure within one export call")]
    backoff_ms: Annotated[PositiveInt, doc("first wait before a retry; doubles each time, with jitter")]
    max_backoff_ms: Annotated[PositiveInt, doc("longest wait between retries")]
    max_elapsed_ms: Annotated[
        PositiveInt, doc("an export call stops retrying once the next wait would end past this long")
    ]
    compression: Annotated[Literal["none", "gzip"], doc("compression of the requests sent")]
    tls: OtlpUpstreamTlsSettings
    token_file: Annotated[FilePath | None, doc("file holding a bearer token sent as authorization (a mounted Secret)")]
    headers: Annotated[Mapping[str, str], doc("extra headers (gRPC metadata) sent with every export")]


@dataclass(frozen=True, slots=True)
class OtlpBufferSettings:
    path: Annotated[
        FilePath | None, doc("directory of accepted requests not yet exported; null: $XDG_STATE_HOME/logclass/otlp")
    ]
    max_bytes: Annotated[
        int,
        Json(minimum=65536),
        doc("bound on buffered bytes (dead letters included); when full senders are told to retry"),
    ]
    retry_after_s: Annotated[
        PositiveFloat, doc("retry delay (RetryInfo, Retry-After) told to senders while the buffer is full")
    ]


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    enabled: Annotated[bool, doc("also run the OTLP front end inside logclass serve")]
    grpc_listen: Annotated[Address | None, doc("host:port of OTLP/gRPC; null: none")]
    http_listen: Annotated[Address | None, doc("host:port of OTLP/HTTP (POST /v1/logs); null: none")]
    tls: Annotated[ServerTlsSettings, doc("TLS of both receivers, as server.tls; client_ca_file too: mTLS")]
    auth: Annotated[ServerAuthSettings, doc("bearer token both receivers require, as server.auth; none: open")]
    max_request_bytes: Annotated[
        int, Json(minimum=1024), doc("largest request after gzip inflation; RESOURCE_EXHAUSTED / 413")
    ]
    max_records_per_request: Annotated[PositiveInt, doc("log records in one request; RESOURCE_EXHAUSTED / 413")]
    max_values_per_request: Annotated[
        PositiveInt, doc("AnyValues (nested elements included) in one request; RESOURCE_EXHAUSTED / 413")
    ]
    max_value_depth: Annotated[
        int, Json(minimum=1, maximum=32), doc("deepest AnyValue (a string is 1); INVALID_ARGUMENT / 400")
    ]
    message_key: Annotated[NonEmptyStr, doc("key of a map body holding the log line")]
    max_rendered_body_chars: Annotated[
        PositiveInt, doc("other non-string bodies are classified as compact JSON cut to this many characters")
    ]
    source_keys: Annotated[
        tuple[OtlpAttributeKey, ...], doc("attributes holding the source, first non-empty string wins")
    ]
    default_source: Annotated[NonEmptyStr, doc("source of records none of source_keys finds")]
    opt_out: Annotated[
        tuple[OtlpOptOutCondition, ...], doc("records matching any condition pass untouched, never classified")
    ]
    attributes: OtlpAttributesSettings
    upstream: OtlpUpstreamSettings
    buffer: OtlpBufferSettings


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: Annotated[
        str | None,
        Json(pattern="^rediss?://"),
        doc("redis:// or rediss:// (TLS) URL of the Valkey/Redis the sidecars share; null: none"),
    ]
    password_file: Annotated[FilePath | None, doc("file holding the store's password (a mounted Secret)")]
    key_prefix: Annotated[
        str, Json(pattern="^[A-Za-z0-9_.:-]{1,64}$"), doc("start of every key: deployments can share a store")
    ]
    timeout_ms: Annotated[PositiveInt, doc("a store call not answered within this long fails: decide locally")]
    circuit_failures: Annotated[PositiveInt, doc("failures in a row that stop store calls for circuit_open_s")]
    circuit_open_s: Annotated[NonNegativeFloat, doc("how long an open circuit keeps the node on its own")]
    claim_lease_ms: Annotated[PositiveInt, doc("how long a node's claim on a new template lasts")]
    decision_ttl_s: Annotated[NonNegativeInt, doc("how long a shared decision is kept; 0: until evicted")]
    sync_timeout_ms: Annotated[
        PositiveInt, doc("limit of a lesson call (publish, snapshot page, log read), off the records' path")
    ]
    lesson_log_length: Annotated[
        PositiveInt, doc("changes the lesson log keeps; a node further behind reads the whole set again")
    ]


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration, one field per section."""

    model: ModelSettings
    router: RouterSettings
    regex: RegexSettings
    memory: MemorySettings
    templates: TemplatesSettings
    embedding: EmbeddingSettings
    llm: LlmSettings
    server: ServerSettings
    limits: LimitsSettings
    relay: RelaySectionSettings
    otlp: OtlpSettings
    store: StoreSettings

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        """From a configuration already validated against the schema."""
        return parse(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, scalars), as YAML would hold it."""
        out: dict[str, Any] = to_plain(self)
        return out
