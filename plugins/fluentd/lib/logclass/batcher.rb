# frozen_string_literal: true

require_relative 'errors'

module Logclass
  # Splits a chunk's records into consecutive batches for Classify calls: at most `max_records`
  # per batch (keep it at or below the sidecar's max_records_per_request, 10,000 by default, or the
  # call fails with INVALID_ARGUMENT) and at most `max_bytes` of messages (the sidecar refuses
  # requests over its max_request_bytes, 16 MiB by default). A record larger than max_bytes goes
  # alone, so it can only fail its own call. Batches are consecutive runs, so results merged back
  # by position keep the chunk's order.
  class Batcher
    # Bytes a record adds to a request beyond its message and source (field tags, lengths).
    RECORD_OVERHEAD = 16

    attr_reader :max_records, :max_bytes

    def initialize(max_records:, max_bytes:)
      raise ConfigError, "max_batch_records must be at least 1 (got #{max_records})" unless max_records.to_i >= 1
      raise ConfigError, "max_batch_bytes must be at least 1 (got #{max_bytes})" unless max_bytes.to_i >= 1

      @max_records = max_records.to_i
      @max_bytes = max_bytes.to_i
    end

    # items: anything; the block gives an item's size in bytes. Returns an Array of batches
    # (Arrays of items), in order, together holding every item exactly once.
    def split(items)
      batches = []
      current = []
      bytes = 0
      items.each do |item|
        size = yield(item) + RECORD_OVERHEAD
        if !current.empty? && (current.size >= @max_records || bytes + size > @max_bytes)
          batches << current
          current = []
          bytes = 0
        end
        current << item
        bytes += size
      end
      batches << current unless current.empty?
      batches
    end
  end
end
