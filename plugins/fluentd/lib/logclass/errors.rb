# frozen_string_literal: true

module Logclass
  # A setting that cannot work. The message names the setting and how to fix it; the Fluentd
  # adapter turns it into a Fluent::ConfigError so fluentd refuses to start instead of running blind.
  class ConfigError < ArgumentError; end

  # A Classify call that did not give one result per record. `reason` is what a fallen-back record
  # carries in its fallback key: the gRPC status in snake_case (`unavailable`, `deadline_exceeded`,
  # `unauthenticated`, ...), `bad_response` or `client_error`.
  class CallFailed < StandardError
    attr_reader :reason, :detail

    def initialize(reason, detail)
      @reason = reason
      @detail = detail
      super("#{reason}: #{detail}")
    end
  end
end
