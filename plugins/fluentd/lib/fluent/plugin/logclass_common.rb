# frozen_string_literal: true

require_relative '../../logclass'

module Fluent
  module Plugin
    # What the logclass filter (filter_logclass.rb) and output (out_logclass.rb) share: the
    # sidecar's parameters and the record keys, and a Logclass::Labeller built from them in each
    # worker. One definition, so the two plugins cannot drift apart in what they accept or write.
    #
    # The including class may define `logclass_hold` (seconds a chunk may wait for model
    # answers; nil: the call's budget) before `start` runs.
    module LogclassCommon
      def self.included(klass)
        klass.class_eval do
          helpers :record_accessor

          desc 'The sidecar: host:port, or a unix socket as unix:/path (or just /path).'
          config_param :endpoint, :string, default: '127.0.0.1:50051'
          desc 'The key holding the log message; record_accessor syntax for nested keys, e.g. $.log.msg.'
          config_param :message_key, :string, default: 'message'
          desc 'The key holding the source (service, app); record_accessor syntax. Unset: `source`, else the tag.'
          config_param :source_key, :string, default: nil
          desc 'A fixed source for every record (when source_key is unset or missing in a record). Unset: the tag.'
          config_param :source, :string, default: nil

          desc 'Where the label goes.'
          config_param :label_key, :string, default: 'log_label'
          desc 'Where the deciding tier goes (regex, embedding, llm, pending, none; fallback when the sidecar was not asked). Empty: not written.'
          config_param :tier_key, :string, default: 'log_label_tier'
          desc 'Where the confidence (0..1) goes. Empty: not written.'
          config_param :confidence_key, :string, default: 'log_label_confidence'
          desc 'Written only on records the sidecar did not classify: why (unavailable, deadline_exceeded, circuit_open, missing_message, ...).'
          config_param :fallback_reason_key, :string, default: 'log_label_fallback'
          desc 'Written only when the sidecar answered but could not classify the record (empty_message, message_too_long, invalid_utf8, source_too_long, internal). Unset: not written.'
          config_param :error_key, :string, default: nil

          desc 'The label given to records the sidecar was not asked about (tier fallback, with the reason). ' \
               "Unset: the sidecar's own router.fallback_label, the label of records it could not decide (Unclassified by default)."
          config_param :fallback_label, :string, default: nil
          desc 'Records without the message key: false passes them on untouched; true gives them the fallback label (reason missing_message).'
          config_param :tag_missing_message, :bool, default: false

          desc 'Deadline of each Classify call (the output: of its calls after hold_timeout, and the least of any). ' \
               'After a failure the rest of the chunk falls back without calls.'
          config_param :timeout, :time, default: 5
          desc "Milliseconds the sidecar may wait for model answers about a call's new templates (ClassifyRequest.budget_ms); " \
               "records still undecided get its fallback label with tier pending. 0: do not wait. Unset: the sidecar's server.inline_budget_ms (250)."
          config_param :budget_ms, :integer, default: nil
          desc "Records per Classify call; at most the sidecar's max_records_per_request (10000 by default)."
          config_param :max_batch_records, :integer, default: 1000
          desc "Message bytes per Classify call; below the sidecar's max_request_bytes (16 MiB by default)."
          config_param :max_batch_bytes, :size, default: 4 * 1024 * 1024
          desc 'Failed calls in a row that open the circuit: no calls (records fall back at once) for circuit_cooldown.'
          config_param :circuit_failures, :integer, default: 3
          desc 'How long an open circuit makes no calls before one probe call tries the sidecar again.'
          config_param :circuit_cooldown, :time, default: 10
          desc 'At most one warning about records falling back per this interval; the next one counts what happened meanwhile.'
          config_param :warn_interval, :time, default: 60

          desc 'Use TLS, with the system CA roots unless tls_ca_path is set (any tls_*_path implies it).'
          config_param :tls, :bool, default: false
          desc "PEM file of the CA that signed the sidecar's certificate."
          config_param :tls_ca_path, :string, default: nil
          desc 'PEM client certificate, for a sidecar that requires client certificates (mTLS); needs tls_client_key_path.'
          config_param :tls_client_cert_path, :string, default: nil
          desc 'PEM private key of tls_client_cert_path.'
          config_param :tls_client_key_path, :string, default: nil
          desc "The name to check the sidecar's certificate against when it differs from the endpoint's host."
          config_param :tls_server_name, :string, default: nil
          desc "The sidecar's bearer token (server.auth.token), sent as `authorization: Bearer ...`. Never logged."
          config_param :bearer_token, :string, default: nil, secret: true
          desc 'A file holding the bearer token (a mounted Secret), instead of bearer_token.'
          config_param :bearer_token_path, :string, default: nil
        end
      end

      attr_reader :classifier, :labeller

      def configure(conf)
        super
        @reader = Logclass::RecordReader.new(message: record_accessor_create(@message_key),
                                             source: @source_key && record_accessor_create(@source_key),
                                             fixed_source: @source)
        @credentials = Logclass::Credentials.tls(tls: @tls, tls_ca_path: @tls_ca_path,
                                                 tls_client_cert_path: @tls_client_cert_path,
                                                 tls_client_key_path: @tls_client_key_path)
        @token = Logclass::Credentials.bearer_token(bearer_token: @bearer_token, bearer_token_path: @bearer_token_path)
        @target = Logclass::Client.target_for(@endpoint)
        # Checked here, so a bad value stops fluentd at start-up instead of at the first chunk.
        Logclass::Batcher.new(max_records: @max_batch_records, max_bytes: @max_batch_bytes)
        Logclass::CircuitBreaker.new(failures: @circuit_failures, cooldown: @circuit_cooldown)
        raise Fluent::ConfigError, "timeout must be more than 0 seconds (got #{@timeout})" unless @timeout.positive?

        @budget_ms = Logclass::Client.budget_ms_for(@budget_ms)
        warn_budget_above_timeout

        @tagger = Logclass::RecordTagger.new(label_key: @label_key, tier_key: @tier_key, confidence_key: @confidence_key,
                                             fallback_reason_key: @fallback_reason_key, error_key: @error_key)
        warn_plaintext_token
      rescue Logclass::ConfigError => e
        raise Fluent::ConfigError, "logclass: #{e.message}"
      end

      def multi_workers_ready?
        true # each worker has its own channel
      end

      # The gRPC channel is made here, in the worker process, never before fluentd forks.
      def start
        super
        client = Logclass::Client.new(@endpoint, timeout: @timeout, budget_ms: @budget_ms, credentials: @credentials,
                                                 bearer_token: @token, tls_server_name: @tls_server_name)
        @classifier = Logclass::Classifier.new(
          client, logger: log, fallback_label: @fallback_label, tag_missing_message: @tag_missing_message,
                  max_batch_records: @max_batch_records, max_batch_bytes: @max_batch_bytes,
                  circuit_failures: @circuit_failures, circuit_cooldown: @circuit_cooldown, warn_interval: @warn_interval
        )
        @labeller = Logclass::Labeller.new(@classifier, reader: @reader, tagger: @tagger, logger: log, hold: logclass_hold)
        describe_sidecar
      end

      def close
        @classifier&.close
        super
      end

      # monitor_agent (/api/plugins.json) shows these next to emit_records.
      def statistics
        stats = super
        section = defined?(Fluent::Plugin::Output) && is_a?(Fluent::Plugin::Output) ? 'output' : 'filter'
        counters = @classifier ? @classifier.stats.to_h : Logclass::Stats.new.to_h
        stats.merge(section => stats.fetch(section, {}).merge(counters.transform_keys { |name| "logclass_#{name}" }))
      end

      private

      def logclass_hold
        nil
      end

      def describe_sidecar
        info = @classifier.model_info(timeout: [@timeout, 5].min)
        log.info "logclass: the sidecar at #{@target} serves #{info.model_version} (tiers #{info.tiers.to_a.join(', ')}; " \
                 "its fallback label #{info.fallback_label.inspect}, this plugin's #{@classifier.fallback_label.inspect})"
        limit = info.max_records_per_request
        if limit.positive? && @max_batch_records > limit
          log.warn "logclass: max_batch_records #{@max_batch_records} is above the sidecar's max_records_per_request " \
                   "#{limit}: its calls would fail with invalid_argument and their records fall back. Set max_batch_records #{limit} or less."
        end
      rescue Logclass::CallFailed => e
        log.warn "logclass: the sidecar at #{@target} does not answer yet (#{e.message}); records pass with the " \
                 "fallback label #{@classifier.fallback_label.inspect} until it does"
      end

      # The sidecar ends every budget a margin (server.deadline_margin_ms) before the call's deadline.
      def warn_budget_above_timeout
        return unless @budget_ms && @budget_ms >= @timeout * 1000

        log.warn "logclass: budget_ms #{@budget_ms} is not below timeout #{@timeout}s: the sidecar stops waiting " \
                 "shortly before each call's deadline instead; lower budget_ms or raise timeout"
      end

      def warn_plaintext_token
        return unless @token && @credentials.nil?
        return if @target.start_with?('unix:', 'unix-abstract:', '127.', 'localhost:', '[::1]:')

        log.warn "logclass: the bearer token goes in plaintext to #{@target}; set tls (and tls_ca_path) unless this network is trusted"
      end
    end
  end
end
