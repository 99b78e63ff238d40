# frozen_string_literal: true

require_relative 'errors'

module Logclass
  # Stops calling a sidecar that keeps failing, so a dead or hung sidecar costs the pipeline
  # nothing per chunk instead of a timeout per chunk.
  #
  # closed: every call goes through; `failures` failed calls in a row open the circuit.
  # open: no call goes through for `cooldown` seconds.
  # half_open: after the cool-down one caller is let through as a probe; its success closes the
  #   circuit, its failure opens it for another cool-down. Other callers are refused meanwhile.
  # Thread-safe: Fluentd may run filter_stream from several input threads at once.
  class CircuitBreaker
    MONOTONIC = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }

    attr_reader :failures_to_open, :cooldown

    def initialize(failures:, cooldown:, clock: MONOTONIC)
      raise ConfigError, "circuit_failures must be at least 1 (got #{failures})" unless failures.to_i >= 1
      raise ConfigError, "circuit_cooldown must be 0 seconds or more (got #{cooldown})" unless cooldown.to_f >= 0

      @failures_to_open = failures.to_i
      @cooldown = cooldown.to_f
      @clock = clock
      @mutex = Mutex.new
      @state = :closed
      @failures = 0
      @opened_at = nil
      @probe_started = nil
    end

    def state
      @mutex.synchronize { @state }
    end

    # Whether to make a call now: :call (closed), :probe (the one caller let through after the
    # cool-down; it should check the sidecar cheaply first) or nil (open: do not call).
    def permit
      @mutex.synchronize do
        case @state
        when :closed
          :call
        when :open
          next nil if @clock.call < @opened_at + @cooldown

          @state = :half_open
          @probe_started = @clock.call
          :probe
        when :half_open
          # A probe that never reported (its thread died) must not keep the circuit shut for good.
          next nil if @clock.call < @probe_started + @cooldown

          @probe_started = @clock.call
          :probe
        end
      end
    end

    # Records a successful call; true when it closed an open (half-open) circuit.
    def success
      @mutex.synchronize do
        reopened = @state != :closed
        @state = :closed
        @failures = 0
        reopened
      end
    end

    # Records a failed call; true when it opened the circuit.
    def failure
      @mutex.synchronize do
        @failures += 1
        next false if @state == :open
        next false if @state == :closed && @failures < @failures_to_open

        @state = :open
        @opened_at = @clock.call
        true
      end
    end

    # Consecutive failures so far (for the warning that says why the circuit opened).
    def consecutive_failures
      @mutex.synchronize { @failures }
    end
  end
end
