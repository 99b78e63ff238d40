# frozen_string_literal: true

require 'json'

module Logclass
  # Reads what the sidecar needs from a record: [source, message], as Classifier#classify takes
  # them. Shared by the filter and the output, so both treat odd records alike.
  #
  # message, source: callables record -> value (Fluentd's record_accessor, or a lambda); source
  # may be nil. fixed_source: the source when the record has none; else the tag.
  class RecordReader
    def initialize(message:, source: nil, fixed_source: nil)
      @message = message
      @source = source
      @fixed_source = fixed_source
    end

    def entry(tag, record)
      [source_of(tag, record), message_of(record)]
    end

    # nil when the record has no message: a missing key, a nested path through a non-hash, or a
    # record that is not a hash at all. Structured messages go as JSON, so they can still be
    # classified rather than passed untouched.
    def message_of(record)
      value = @message.call(record)
      case value
      when nil then nil
      when String then value
      when Hash, Array then JSON.generate(value)
      else value.to_s
      end
    rescue StandardError
      nil
    end

    # A tag is always there for Fluentd's records; '' only guards a caller without one.
    def source_of(tag, record)
      value = begin
        @source&.call(record)
      rescue StandardError
        nil
      end
      value.nil? ? (@fixed_source || tag || '') : value.to_s
    end
  end
end
