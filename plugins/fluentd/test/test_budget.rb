# frozen_string_literal: true

require_relative 'helper'

# budget_ms: how long the sidecar may wait for model answers about a call's new templates
# (ClassifyRequest.budget_ms). What goes on the wire, checked by a real gRPC server that records
# the requests, and what a real sidecar does with it.
class BudgetTest < Test::Unit::TestCase
  # A real gRPC server speaking the proto: records each request's budget_ms (nil when unset) and
  # wait_for_all, and answers every record.
  class RecordingServer < Logclass::V1::LogClassifier::Service
    attr_reader :seen

    def initialize
      super
      @seen = Queue.new
    end

    def classify(request, _call)
      # has_budget_ms? tells unset from 0 (google-protobuf 3.21 answers 0 or false, not a boolean).
      @seen << [request.has_budget_ms? ? request.budget_ms : nil, request.wait_for_all, request.records.size]
      results = request.records.map { |r| Logclass::V1::ClassifyResult.new(id: r.id, label: 'Seen', tier: 'regex') }
      Logclass::V1::ClassifyResponse.new(results: results)
    end
  end

  # A RecordingServer on a clock the test gives the classifier: each call moves it `step` seconds
  # on, as a call waiting that long for model answers would, and its deadline (seconds left when
  # it arrived) is recorded.
  class SteppingServer < RecordingServer
    attr_reader :deadlines

    def initialize(now, step)
      super()
      @now = now
      @step = step
      @deadlines = Queue.new
    end

    def classify(request, call)
      @deadlines << (call.deadline - Time.now)
      @now[0] += @step
      super
    end
  end

  def serve(service)
    # Room for every classifier's call at once: grpc's Ruby server refuses a call when all its
    # pool's threads are busy, which a loaded machine made happen with 2 (a CI run fell back).
    @server = GRPC::RpcServer.new(pool_size: 8)
    port = @server.add_http2_port('127.0.0.1:0', :this_port_is_insecure)
    @server.handle(service)
    @runner = Thread.new { @server.run }
    @server.wait_till_running(10)
    "127.0.0.1:#{port}"
  end

  def drain(queue)
    Array.new(queue.size) { queue.pop }
  end

  def classifier(endpoint, **options)
    @logger, @log = LogclassTest.logger
    client = Logclass::Client.new(endpoint, timeout: 30, budget_ms: options.delete(:budget_ms))
    (@classifiers ||= []) << Logclass::Classifier.new(client, logger: @logger, **options)
    @classifiers.last
  end

  teardown do
    @classifiers&.each(&:close)
    @server&.stop
    @runner&.join(10)
  end

  test 'budget_ms is whole milliseconds from 0 to 2**32-1, or unset for the sidecar default' do
    assert_nil Logclass::Client.budget_ms_for(nil)
    assert_equal [0, 250, 4_294_967_295, 10, 7], [0, 250, 4_294_967_295, '010', ' 7 '].map { |v| Logclass::Client.budget_ms_for(v) }
    [-1, 4_294_967_296, 1.5, '1.5', 'soon', true].each do |bad|
      error = assert_raise(Logclass::ConfigError, bad.inspect) { Logclass::Client.budget_ms_for(bad) }
      assert_match(/budget_ms must be a whole number of milliseconds from 0 to 4294967295 \(got #{Regexp.escape(bad.inspect)}\)/,
                   error.message)
    end
    error = assert_raise(Logclass::ConfigError) { Logclass::Client.new('127.0.0.1:1', timeout: 1, budget_ms: -5) }
    assert_match(/budget_ms must be/, error.message)
    client = Logclass::Client.new('127.0.0.1:1', timeout: 1, budget_ms: 120)
    assert_equal 120, client.budget_ms
    client.close
  end

  test 'the configured budget goes with every Classify call; none configured, none sent' do
    service = RecordingServer.new
    endpoint = serve(service)
    entries = [%w[a one], %w[a two], ['a', nil], %w[a three]]
    { 120 => 120, 0 => 0, nil => nil, '40' => 40 }.each do |configured, sent|
      outcomes = classifier(endpoint, budget_ms: configured, max_batch_records: 2).classify(entries)
      assert_equal ['Seen', 'Seen', nil, 'Seen'], outcomes.map { |o| o&.label }, "#{configured.inspect}: #{@log.string}"
      calls = drain(service.seen)
      assert_equal [[sent, false, 2], [sent, false, 1]], calls, "budget_ms #{configured.inspect}: two calls, each with it"
    end
  end

  test 'a hold: wait_for_all while it lasts, each deadline the rest of it but never under timeout; then the budget' do
    now = [0.0]
    service = SteppingServer.new(now, 10)
    endpoint = serve(service)
    @logger, @log = LogclassTest.logger
    client = Logclass::Client.new(endpoint, timeout: 5, budget_ms: 120)
    c = Logclass::Classifier.new(client, logger: @logger, max_batch_records: 1, clock: -> { now[0] })
    (@classifiers ||= []) << c
    outcomes = c.classify(Array.new(4) { |i| ['a', "m#{i}"] }, hold: 25)
    assert_equal ['Seen'] * 4, outcomes.map(&:label), @log.string
    # Calls at 0, 10, 20 and 30 s of a 25 s hold: the third has 5 s of it left, the fourth none.
    assert_equal [[nil, true, 1]] * 3 + [[120, false, 1]], drain(service.seen), 'budget_ms is not sent with wait_for_all'
    assert_equal [25, 15, 5, 5], drain(service.deadlines).map(&:round)

    c.classify([%w[a again]])
    assert_equal [[[120, false, 1]], [5]], [drain(service.seen), drain(service.deadlines).map(&:round)], 'no hold, no wait_for_all'
  end

  test 'budget_ms 0 from a real sidecar: a new template at once, pending, decided in the background' do
    message = LogclassTest.novel_messages(1, start: 10_000).first
    c = classifier(Sidecar.shared.address, budget_ms: 0)
    outcome = c.classify([['BillingSystem', message]]).first
    # The sidecar's answer (its fallback label, tier pending), not a failed call: no fallback reason.
    assert_equal ['Unclassified', 'pending', 0.0, nil, nil], outcome.to_a, 'answered without waiting for the model'
    assert_false outcome.fallback?
    assert_equal [1, 0], c.stats.to_h.values_at('classified_records', 'fallback_records')

    # Not cached as pending: once the background decision lands, budget 0 gets it from the cache.
    decided = nil
    600.times do
      decided = c.classify([['BillingSystem', message]]).first
      break unless decided.tier == 'pending'

      sleep 0.05
    end
    assert_not_equal 'pending', decided.tier, 'the template was decided in the background'
    assert_include %w[embedding none], decided.tier
  end

  test 'a long budget from a real sidecar: every new template is answered by the model' do
    messages = LogclassTest.novel_messages(300, start: 20_000)
    c = classifier(Sidecar.shared.address, budget_ms: 20_000, max_batch_records: 1000)
    outcomes = c.classify(messages.map { |m| ['AnalyticsEngine', m] })
    assert_equal 300, outcomes.size
    assert_equal [], outcomes.map(&:tier).uniq - %w[embedding none], 'none pending, none fallen back'
    assert(outcomes.none?(&:fallback?))
  end
end
