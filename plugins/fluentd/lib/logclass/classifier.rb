# frozen_string_literal: true

require_relative 'batcher'
require_relative 'circuit_breaker'
require_relative 'client'
require_relative 'errors'
require_relative 'outcome'
require_relative 'rate_limited_warning'
require_relative 'stats'

module Logclass
  # Classifies one chunk of records through the sidecar and never loses one: every record gets an
  # outcome, in order, whatever the sidecar does.
  #
  # The chunk is split into batches (Batcher), one Classify call each, results merged back by
  # position. When a call fails (sidecar down, past its deadline, an error status) its records
  # and the rest of the chunk get the fallback label with the reason, so a chunk waits at most one
  # `timeout` (one hold, when the caller holds it for model answers); the circuit breaker then
  # spares the following chunks even that. Warnings are rate
  # limited. This class knows nothing of Fluentd: the adapter (fluent/plugin/filter_logclass.rb)
  # extracts [source, message] pairs and writes the outcomes back with RecordTagger.
  class Classifier
    MISSING_MESSAGE = 'missing_message'
    CIRCUIT_OPEN = 'circuit_open'
    # Deadline of the GetModelInfo call that probes an open circuit before records are sent: a
    # hung sidecar then costs a second per cool-down, not a full `timeout`.
    PROBE_TIMEOUT = 1.0
    # Record ids within one request (its position), made once rather than per record per call.
    IDS = Array.new(10_000) { |k| k.to_s.freeze }.freeze
    # The sidecar's default router.fallback_label: the label until a sidecar reports its own.
    DEFAULT_FALLBACK_LABEL = 'Unclassified'

    attr_reader :client, :batcher, :breaker, :stats, :fallback_label

    # client: a Client. logger: #warn and #info (Fluentd's plugin logger, Ruby's Logger).
    # fallback_label: the label of records the sidecar did not classify. nil: the sidecar's own
    # (router.fallback_label, as GetModelInfo reports it), so a record is "not classified" under
    # one label whether the sidecar could not decide it (tier none or pending) or was not asked
    # (tier fallback, with the reason).
    # tag_missing_message: records without a message get the fallback label (reason
    # missing_message) instead of passing through untouched.
    def initialize(client, logger:, fallback_label: nil, tag_missing_message: false,
                   max_batch_records: 1000, max_batch_bytes: 4 << 20,
                   circuit_failures: 3, circuit_cooldown: 10, warn_interval: 60,
                   clock: CircuitBreaker::MONOTONIC)
      @client = client
      @logger = logger
      @tag_missing_message = tag_missing_message
      @fixed_label = !fallback_label.nil?
      use_fallback_label(fallback_label || DEFAULT_FALLBACK_LABEL)
      @batcher = Batcher.new(max_records: max_batch_records, max_bytes: max_batch_bytes)
      @breaker = CircuitBreaker.new(failures: circuit_failures, cooldown: circuit_cooldown, clock: clock)
      @warning = RateLimitedWarning.new(logger, interval: warn_interval, clock: clock)
      @clock = clock
      @stats = Stats.new
    end

    # entries: [source, message] pairs (Strings; message nil when the record has none).
    # Returns one Outcome per entry, in the same order; nil means "leave this record as it is".
    # hold: seconds this chunk may wait for model answers about its new templates (wait_for_all),
    # across all its calls; nil: each call waits the client's budget_ms (or the sidecar's own).
    def classify(entries, hold: nil)
      hold_until = hold && @clock.call + hold
      outcomes = Array.new(entries.size)
      positions = []
      entries.each_with_index do |(_source, message), i|
        if message.nil?
          outcomes[i] = @missing
        else
          positions << i
        end
      end
      count_missing(entries.size - positions.size)

      batches = @batcher.split(positions) { |i| entries[i][1].bytesize + entries[i][0].bytesize }
      batches.each_with_index do |batch, k|
        failure = call(batch, entries, outcomes, hold_until)
        next unless failure

        # This batch and the rest of the chunk: one timeout per chunk at most, and the breaker
        # hears of one failure per chunk, not one per batch.
        fall_back(batches[k..].flatten(1), outcomes, failure)
        break
      end
      outcomes
    end

    # Asks the sidecar what it serves (model version, limits, fallback label). Raises CallFailed.
    def model_info(timeout: @client.timeout)
      info = @client.model_info(timeout: timeout)
      learn_fallback_label(info)
      info
    end

    def close
      @client.close
    end

    private

    def learn_fallback_label(info)
      label = info.fallback_label if info.respond_to?(:fallback_label)
      use_fallback_label(label) unless @fixed_label || label.nil? || label.empty?
    end

    # The outcome for missing messages is made once, not per record.
    def use_fallback_label(label)
      @fallback_label = label
      @missing = @tag_missing_message ? Outcome.fallback(label, MISSING_MESSAGE) : nil
    end

    # One Classify call for `batch` (positions into entries); fills their outcomes.
    # Returns nil on success, else why the remaining records fall back (a CallFailed or CIRCUIT_OPEN).
    def call(batch, entries, outcomes, hold_until)
      permit = @breaker.permit
      return CIRCUIT_OPEN unless permit

      records = batch.each_with_index.map { |i, k| Client.log_record(entries[i][0], entries[i][1], IDS[k] || k.to_s) }
      started = @clock.call
      begin
        # The probe also learns the label of a sidecar that came back with another config.
        model_info(timeout: [PROBE_TIMEOUT, @client.timeout].min) if permit == :probe
        results = send_batch(records, hold_until)
      rescue CallFailed => e
        failed(e, @clock.call - started)
        return e
      end
      @stats.add('rpc_calls')
      @stats.add('rpc_seconds', @clock.call - started)
      @logger.info("logclass: the sidecar at #{@client.target} answers again; classifying records again") if @breaker.success
      batch.each_with_index { |i, k| outcomes[i] = Outcome.from_result(results[k]) }
      @stats.add('classified_records', batch.size)
      nil
    end

    # While the chunk's hold lasts, the call waits for every answer until its deadline: the rest
    # of the hold, but never less than the client's timeout, so a short remainder cannot fail the
    # known records of a call on a loaded sidecar. A chunk thus waits at most hold + timeout; once
    # the hold is spent its remaining calls wait only their budget.
    def send_batch(records, hold_until)
      remaining = hold_until && hold_until - @clock.call
      return @client.classify(records) unless remaining&.positive?

      @client.classify(records, timeout: [remaining, @client.timeout].max, wait_for_all: true)
    end

    def failed(error, seconds)
      @stats.add('rpc_calls')
      @stats.add('rpc_failures')
      @stats.add('rpc_seconds', seconds)
      @last_failure = "#{error.reason} after #{seconds.round(3)}s: #{error.detail}"
      return unless @breaker.failure

      @stats.add('circuit_opens')
      @logger.warn("logclass: #{@breaker.consecutive_failures} Classify calls in a row to #{@client.target} failed " \
                   "(last: #{@last_failure}); not calling it for #{@breaker.cooldown}s, records pass with the " \
                   "fallback label #{@fallback_label.inspect} meanwhile. #{hint(error.reason)}")
    end

    def fall_back(positions, outcomes, why)
      reason = why.is_a?(CallFailed) ? why.reason : why
      outcome = Outcome.fallback(@fallback_label, reason)
      positions.each { |i| outcomes[i] = outcome }
      @stats.fell_back(reason, positions.size)
      message = if why.is_a?(CallFailed)
                  "Classify to #{@client.target} failed (#{reason}: #{why.detail}). #{hint(reason)}"
                else
                  "the circuit to #{@client.target} is open (last failure: #{@last_failure}); not calling it"
                end
      @warning.warn("logclass: #{message} #{Classifier.records(positions.size)} passed with the fallback label " \
                    "#{@fallback_label.inspect}, fallback reason #{reason}.",
                    reason: reason, records: positions.size)
    end

    def count_missing(count)
      return if count.zero?

      if @missing
        @stats.fell_back(MISSING_MESSAGE, count)
      else
        @stats.add('untouched_records', count)
      end
    end

    def self.records(count)
      count == 1 ? '1 record' : "#{count} records"
    end

    # What to do about a failure, by its reason.
    def hint(reason)
      case reason
      when 'unavailable' then 'Is the sidecar running and listening there (logclass serve --listen)?'
      when 'deadline_exceeded' then 'The sidecar is slower than timeout: raise timeout, lower max_batch_records, or give the sidecar more CPU.'
      when 'unauthenticated' then 'The sidecar wants a bearer token: set bearer_token or bearer_token_path to its server.auth token.'
      when 'invalid_argument' then "Lower max_batch_records to the sidecar's max_records_per_request (GetModelInfo)."
      when 'resource_exhausted' then 'The sidecar is overloaded or the request too large: lower max_batch_records or max_batch_bytes.'
      else 'Check the sidecar log.'
      end
    end
  end
end
