# frozen_string_literal: true

module Logclass
  # Writes an Outcome into a record under the configured keys. A key set to nil or "" is not
  # written. The record is copied (shallowly) before writing: Fluentd may hand the same hash to
  # other filters or outputs, and the caller's chunk must stay as it was if anything goes wrong.
  class RecordTagger
    def initialize(label_key: 'log_label', tier_key: 'log_label_tier', confidence_key: 'log_label_confidence',
                   fallback_reason_key: 'log_label_fallback', error_key: nil)
      @label_key = key(label_key)
      @tier_key = key(tier_key)
      @confidence_key = key(confidence_key)
      @fallback_reason_key = key(fallback_reason_key)
      @error_key = key(error_key)
    end

    # The record with the outcome written in (a new hash), or the record itself when outcome is nil.
    def tag(record, outcome)
      return record if outcome.nil?

      out = record.dup
      out[@label_key] = outcome.label if @label_key
      out[@tier_key] = outcome.tier if @tier_key
      out[@confidence_key] = outcome.confidence if @confidence_key
      out[@fallback_reason_key] = outcome.fallback_reason if @fallback_reason_key && outcome.fallback_reason
      out[@error_key] = outcome.error if @error_key && outcome.error
      out
    end

    private

    def key(name)
      name.nil? || name.empty? ? nil : name.dup.freeze
    end
  end
end
