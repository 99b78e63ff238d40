# frozen_string_literal: true

module Logclass
  # What the plugin writes into one record: the sidecar's decision, or the fallback and why.
  #
  # error: set when the sidecar answered but could not classify this record (`empty_message`,
  #   `message_too_long`, `invalid_utf8`, `source_too_long`, `internal`); the label is then the
  #   sidecar's own fallback.
  # fallback_reason: set when the sidecar did not answer for this record (the call failed, the
  #   circuit is open, or the record has no message); the label is the plugin's fallback label.
  # Positional (not keyword_init): one is made per record, and keyword structs cost twice as much.
  Outcome = Struct.new(:label, :tier, :confidence, :error, :fallback_reason) do
    def fallback?
      !fallback_reason.nil?
    end
  end

  class Outcome
    # The tier written for a record the sidecar did not classify. Not "none": that is the sidecar's
    # own answer ("no tier decided"), which is worth telling apart from "the sidecar was not asked".
    FALLBACK_TIER = 'fallback'

    def self.from_result(result)
      new(result.label, result.tier, result.confidence.round(4), error_name(result.error))
    end

    def self.fallback(label, reason)
      new(label, FALLBACK_TIER, 0.0, nil, reason).freeze
    end

    # protobuf gives known enum values as symbols and values newer than these stubs as integers.
    def self.error_name(code)
      return nil if code == :ERROR_CODE_UNSPECIFIED || code == 0

      code.is_a?(Symbol) ? code.to_s.downcase : "error_#{code}"
    end
  end
end
