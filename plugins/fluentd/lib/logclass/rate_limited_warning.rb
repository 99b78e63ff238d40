# frozen_string_literal: true

module Logclass
  # Logs a warning about records that fell back at most once per `interval` seconds, however many
  # chunks fail: a dead sidecar must not flood the log the pipeline is shipping. The warnings
  # between two log lines are counted, and the next line says how many records fell back since the
  # last one and why.
  class RateLimitedWarning
    MONOTONIC = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }

    # logger: anything with #warn(String) (Fluentd's plugin logger, Ruby's Logger).
    def initialize(logger, interval:, clock: MONOTONIC)
      @logger = logger
      @interval = interval.to_f
      @clock = clock
      @mutex = Mutex.new
      @last = nil
      @suppressed = Hash.new(0)
    end

    # message: why `records` records fell back now; reason: their fallback reason.
    # Returns true when the line was logged, false when it was only counted.
    def warn(message, reason:, records:)
      line = @mutex.synchronize do
        now = @clock.call
        if @last && now - @last < @interval
          @suppressed[reason] += records
          next nil
        end

        @last = now
        text = message
        unless @suppressed.empty?
          counts = @suppressed.sort.map { |why, n| "#{why}: #{n}" }.join(', ')
          text = "#{text} (since the last warning #{@suppressed.values.sum} more records fell back: #{counts})"
          @suppressed = Hash.new(0)
        end
        text
      end
      @logger.warn(line) if line
      !line.nil?
    end
  end
end
