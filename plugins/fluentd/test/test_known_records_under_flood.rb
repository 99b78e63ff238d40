# frozen_string_literal: true

require_relative 'helper'

# Known records are answered at once whatever the model lanes hold: while a second client floods a
# real sidecar with thousands of never-seen templates (each request waiting for all its answers),
# chunks of known records keep flowing through the plugin core with their real labels, none past
# its deadline, the circuit never opened. A sidecar of its own: the flood must not slow the others.
class KnownRecordsUnderFloodTest < Test::Unit::TestCase
  FLOOD_THREADS = 2
  FLOOD_RECORDS = 500 # per request
  # Requests per thread: at least FLOOD_REQUESTS (2,000 new templates in all), more (up to
  # FLOOD_MAX_REQUESTS) until DURING_FLOOD known chunks went through while the flood was in flight,
  # for a sidecar so fast that the first ones are answered before the known chunks got going.
  FLOOD_REQUESTS = 2
  FLOOD_MAX_REQUESTS = 20
  DURING_FLOOD = 20
  FLOOD_SOURCES = %w[BillingSystem AnalyticsEngine ModernHR].freeze
  # A bound on the loop, not on time: the known chunks stop when the flood is over.
  MAX_CHUNKS = 20_000

  class << self
    attr_accessor :sidecar

    def startup
      @sidecar = Sidecar.new.start
    end

    def shutdown
      @sidecar&.stop
    end
  end

  teardown do
    @classifiers&.each(&:close)
  end

  def classifier(**options)
    @logger, @log = LogclassTest.logger
    client = Logclass::Client.new(self.class.sidecar.address, timeout: options.delete(:timeout) || 30,
                                                              budget_ms: options.delete(:budget_ms))
    (@classifiers ||= []) << Logclass::Classifier.new(client, logger: @logger, **options)
    @classifiers.last
  end

  # The raw stub of another client (its own channel): requests of FLOOD_RECORDS new templates
  # each, wait_for_all. Returns the flooder's thread; `busy` counts its calls in flight.
  def flood(thread_index, busy, started)
    stub = Logclass::V1::LogClassifier::Stub.new(self.class.sidecar.address, :this_channel_is_insecure)
    Thread.new do
      tiers = Hash.new(0)
      errors = []
      FLOOD_MAX_REQUESTS.times do |n|
        break if n >= FLOOD_REQUESTS && busy.synchronize { busy.enough }

        start = (thread_index * FLOOD_MAX_REQUESTS + n) * FLOOD_RECORDS
        records = LogclassTest.novel_messages(FLOOD_RECORDS, start: start).each_with_index.map do |message, k|
          Logclass::V1::LogRecord.new(source: FLOOD_SOURCES[k % FLOOD_SOURCES.size], message: message, id: k.to_s)
        end
        request = Logclass::V1::ClassifyRequest.new(records: records, wait_for_all: true)
        busy.synchronize { busy.count += 1 }
        started << true if n.zero?
        begin
          stub.classify(request, deadline: Time.now + 300).results.each { |r| tiers[r.tier] += 1 }
        rescue GRPC::BadStatus => e
          errors << "#{e.code}: #{e.details}"
        ensure
          busy.synchronize { busy.count -= 1 }
        end
      end
      [tiers, errors]
    ensure
      started << true # also when this thread failed: the test must not wait on it forever
    end
  end

  # A Mutex with what it guards: how many flood calls are in flight, and whether enough known
  # chunks went through meanwhile.
  class Busy < Mutex
    attr_accessor :count, :enough

    def initialize
      super
      @count = 0
      @enough = false
    end
  end

  test 'known records keep their labels at once while another client floods the sidecar with new templates' do
    rows = LogclassTest.seed_rows
    entries = rows.map { |source, message, _| [source, message] } * 20 # 200 records
    expected = rows.map(&:last) * 20

    # Warm: every seed row decided once (a long budget), then known: budget 0 gets no pending.
    assert_equal expected, classifier(budget_ms: 30_000).classify(entries).map(&:label)
    known = classifier(budget_ms: 0).classify(entries)
    assert_equal expected, known.map(&:label)
    assert_equal [], known.map(&:tier).uniq & %w[pending fallback], 'the seed rows are known now'

    # The plugin's way: its default budget, a short timeout, two calls per chunk, the breaker on.
    plugin = classifier(timeout: 2, max_batch_records: 100, circuit_failures: 2, circuit_cooldown: 30)
    busy = Busy.new
    started = Queue.new
    flooders = Array.new(FLOOD_THREADS) { |t| flood(t, busy, started) }
    started.pop # the first flood call is on its way

    chunks = 0
    during_flood = 0
    wrong = []
    seconds = []
    while chunks < MAX_CHUNKS && flooders.any?(&:alive?)
      flooding = busy.synchronize { busy.count.positive? }
      began = LogclassTest.monotonic
      outcomes = plugin.classify(entries)
      seconds << LogclassTest.monotonic - began
      chunks += 1
      if flooding
        during_flood += 1
        busy.synchronize { busy.enough = true } if during_flood == DURING_FLOOD
      end
      outcomes.each_with_index do |outcome, i|
        next if outcome.label == expected[i] && !outcome.fallback? && outcome.tier != 'pending'

        wrong << [chunks, i, outcome.to_a] if wrong.size < 20
      end
      sleep 0.01 # a pipeline's pace, not a bound: unpaced, this loop would starve the flood of CPU
    end
    results = flooders.map(&:value)

    slowest = seconds.max.round(3)
    summary = "#{chunks} chunks (#{during_flood} during the flood), slowest #{slowest}s; sidecar log:\n" \
              "#{self.class.sidecar.log.lines.last(30).join}"
    stats = plugin.stats.to_h
    assert_equal({}, stats['fallback_records_by_reason'], summary) # no deadline_exceeded, no circuit_open
    assert_equal [], wrong, summary
    assert_equal [chunks * 200, 0, 0], stats.values_at('classified_records', 'fallback_records', 'rpc_failures'), summary
    assert_equal :closed, plugin.breaker.state
    assert_operator during_flood, :>=, DURING_FLOOD, "known chunks went through while the flood was in flight: #{summary}"

    # The flood really went through the model lanes: every one of its records answered, none pending.
    tiers = results.map(&:first).inject { |a, b| a.merge(b) { |_, x, y| x + y } }
    assert_equal [], results.flat_map(&:last), 'no flood call failed'
    assert_operator tiers.values.sum, :>=, FLOOD_THREADS * FLOOD_REQUESTS * FLOOD_RECORDS
    assert_equal 0, tiers.values.sum % FLOOD_RECORDS, "every flood request answered in full: #{tiers}"
    assert_equal [], tiers.keys - %w[embedding none], "the flood's tiers: #{tiers}"
  end
end
