# frozen_string_literal: true

require 'grpc'
require_relative 'api/classifier_services_pb'
require_relative 'errors'
require_relative 'version'

module Logclass
  # One gRPC channel to the sidecar, reused by every call (and every thread: gRPC channels are
  # thread-safe). Each call has its own deadline; any failure comes out as CallFailed.
  class Client
    CHANNEL_ARGS = {
      'grpc.primary_user_agent' => "fluent-plugin-logclass/#{VERSION}",
      'grpc.keepalive_time_ms' => 30_000,
      'grpc.max_receive_message_length' => 64 << 20,
      # gRPC's reconnect backoff grows to 120 s by default: a sidecar that restarted would then be
      # ignored for up to two minutes after it is back. Capped so the circuit breaker's probe finds it.
      'grpc.initial_reconnect_backoff_ms' => 500,
      'grpc.max_reconnect_backoff_ms' => 5_000
    }.freeze
    STATUS_NAMES = GRPC::Core::StatusCodes.constants.to_h do |name|
      [GRPC::Core::StatusCodes.const_get(name), name.to_s.downcase]
    end.freeze

    # ClassifyRequest.budget_ms is a uint32.
    MAX_BUDGET_MS = (1 << 32) - 1

    attr_reader :target, :timeout, :budget_ms

    # endpoint: host:port, unix:/path or a bare /path (a unix socket).
    def self.target_for(endpoint)
      target = endpoint.to_s.strip
      raise ConfigError, 'endpoint is empty: set it to host:port (e.g. 127.0.0.1:50051) or unix:/path/to/socket' if target.empty?
      return target if target.start_with?('unix:', 'unix-abstract:')
      return "unix:#{target}" if target.start_with?('/')
      unless target.match?(/:\d+\z/)
        raise ConfigError, "endpoint #{target.inspect} has no port: write host:port (e.g. 127.0.0.1:50051) or unix:/path/to/socket"
      end

      target
    end

    # One record of a request, as the Hash protobuf builds the LogRecord from (in C: about five
    # times faster than a LogRecord.new per record). protobuf refuses a whole request if any
    # `message` is not valid UTF-8, so such a message travels as `message_bytes` and only its own
    # record comes back with the INVALID_UTF8 error. Sources are scrubbed: they only route and key
    # the cache. id: echoed back by the sidecar; #classify checks the echo, so results can never
    # be merged into the wrong records.
    # budget_ms: how long the sidecar may wait for model answers about a request's new templates
    # (ClassifyRequest.budget_ms), an Integer of milliseconds, 0 included (do not wait); nil: not
    # sent, the sidecar's server.inline_budget_ms. Records still undecided then come back with the
    # sidecar's fallback label and tier "pending" (a real answer, not a failed call).
    def self.budget_ms_for(value)
      return nil if value.nil?

      budget = case value
               when Integer then value
               when String then Integer(value.strip, 10, exception: false)
               end
      unless budget && budget >= 0 && budget <= MAX_BUDGET_MS
        raise ConfigError, "budget_ms must be a whole number of milliseconds from 0 to #{MAX_BUDGET_MS} " \
                           "(got #{value.inspect}); leave it unset for the sidecar's server.inline_budget_ms"
      end

      budget
    end

    def self.log_record(source, message, id)
      text = utf8(message)
      src = utf8(source) || source.dup.force_encoding(Encoding::UTF_8).scrub('?')
      text ? { source: src, message: text, id: id } : { source: src, message_bytes: message.b, id: id }
    end

    def self.utf8(value)
      return value if value.encoding == Encoding::UTF_8 && value.valid_encoding?

      if value.encoding == Encoding::BINARY || value.encoding == Encoding::UTF_8 || value.encoding == Encoding::US_ASCII
        text = value.dup.force_encoding(Encoding::UTF_8)
        text.valid_encoding? ? text : nil
      else
        value.encode(Encoding::UTF_8)
      end
    rescue EncodingError
      nil
    end
    private_class_method :utf8

    # credentials: GRPC::Core::ChannelCredentials (TLS) or nil (plaintext).
    # tls_server_name: the name to check the sidecar's certificate against, when it differs from
    # the endpoint's host (e.g. the endpoint is an IP address and the certificate names a DNS name).
    # budget_ms: see Client.budget_ms_for; sent with every Classify call.
    def initialize(endpoint, timeout:, budget_ms: nil, credentials: nil, bearer_token: nil, tls_server_name: nil)
      @target = self.class.target_for(endpoint)
      @timeout = Float(timeout)
      raise ConfigError, "timeout must be more than 0 seconds (got #{timeout})" unless @timeout.positive?

      @budget_ms = self.class.budget_ms_for(budget_ms)

      args = CHANNEL_ARGS.dup
      args[GRPC::Core::Channel::SSL_TARGET] = tls_server_name if credentials && tls_server_name
      creds = credentials || :this_channel_is_insecure
      @channel = GRPC::Core::Channel.new(@target, args, creds)
      @stub = V1::LogClassifier::Stub.new(@target, creds, channel_override: @channel)
      @metadata = bearer_token ? { 'authorization' => "Bearer #{bearer_token}" }.freeze : {}.freeze
    end

    # One Classify call for `records` (Hashes from Client.log_record); returns its ClassifyResults,
    # one per record, in the records' order. The request carries budget_ms when one is set.
    # Results that do not match the records one to one (count or echoed ids) fail the call with
    # bad_response: a fallback label is better than another record's label.
    # wait_for_all: the sidecar waits for every model answer until shortly before this call's
    # deadline (`timeout`, seconds) instead of for its budget; budget_ms is then not sent.
    def classify(records, timeout: @timeout, wait_for_all: false)
      request = V1::ClassifyRequest.new(records: records)
      if wait_for_all
        request.wait_for_all = true
      elsif !@budget_ms.nil? # unset (not 0): the sidecar's own budget
        request.budget_ms = @budget_ms
      end
      response = call(timeout) { |deadline| @stub.classify(request, deadline: deadline, metadata: @metadata) }
      results = response.results
      if results.size != records.size
        raise CallFailed.new('bad_response', "the sidecar answered #{results.size} results for #{records.size} records")
      end
      records.each_with_index do |record, k|
        next if results[k].id == record[:id]

        raise CallFailed.new('bad_response', "result #{k} echoes id #{results[k].id.inspect}, not #{record[:id].inspect}")
      end
      results
    end

    # The sidecar's ModelInfo (labels, model version, limits).
    def model_info(timeout: @timeout)
      call(timeout) { |deadline| @stub.get_model_info(V1::GetModelInfoRequest.new, deadline: deadline, metadata: @metadata) }
    end

    def close
      @channel.close
    end

    private

    def call(timeout)
      yield Time.now + timeout
    rescue GRPC::BadStatus => e
      raise CallFailed.new(STATUS_NAMES.fetch(e.code, "status_#{e.code}"), e.details)
    rescue StandardError => e # a closed channel, a marshalling bug: still a failed call, never a lost chunk
      raise CallFailed.new('client_error', "#{e.class}: #{e.message}")
    end
  end
end
