# frozen_string_literal: true

module Logclass
  # Counters of what the plugin did, for Fluentd's monitor_agent (/api/plugins.json) and tests.
  # Thread-safe; each counter only grows.
  class Stats
    COUNTERS = %w[
      classified_records fallback_records untouched_records
      rpc_calls rpc_failures rpc_seconds circuit_opens
    ].freeze

    def initialize
      @mutex = Mutex.new
      @counts = COUNTERS.to_h { |name| [name, 0] }
      @fallback_by_reason = Hash.new(0)
    end

    def add(name, amount = 1)
      raise ArgumentError, "unknown counter #{name}" unless @counts.key?(name)

      @mutex.synchronize { @counts[name] += amount }
    end

    def fell_back(reason, records)
      @mutex.synchronize do
        @counts['fallback_records'] += records
        @fallback_by_reason[reason] += records
      end
    end

    # {"classified_records" => 12, ..., "fallback_records_by_reason" => {"unavailable" => 3}}
    def to_h
      @mutex.synchronize do
        @counts.merge('rpc_seconds' => @counts['rpc_seconds'].round(6),
                      'fallback_records_by_reason' => @fallback_by_reason.dup)
      end
    end
  end
end
