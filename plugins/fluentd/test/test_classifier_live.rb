# frozen_string_literal: true

require_relative 'helper'

# The core against a real sidecar (shared by the test process): labels, order, batching, records
# the sidecar cannot classify, and a hung sidecar (SIGSTOP) that comes back.
class ClassifierLiveTest < Test::Unit::TestCase
  self.test_order = :defined

  def classifier(**options)
    @logger, @log = LogclassTest.logger
    client = Logclass::Client.new(Sidecar.shared.address, timeout: options.delete(:timeout) || 30)
    @classifier = Logclass::Classifier.new(client, logger: @logger, **options)
  end

  teardown do
    @classifier&.close
  end

  test 'the seed test rows get their labels, in order' do
    rows = LogclassTest.seed_rows
    outcomes = classifier.classify(rows.map { |source, message, _| [source, message] })
    assert_equal rows.map(&:last), outcomes.map(&:label)
    assert_equal 'regex', outcomes[1].tier
    assert_equal 1.0, outcomes[1].confidence
    assert(outcomes.none?(&:fallback?))
    assert_equal 10, @classifier.stats.to_h['classified_records']
  end

  test 'a chunk split into many calls comes back in order' do
    rows = LogclassTest.seed_rows
    # 300 records in a scrambled order, 7 per call: 43 calls, merged back by position.
    picks = Array.new(300) { |i| (i * 7 + i / 10) % rows.size }
    outcomes = classifier(max_batch_records: 7).classify(picks.map { |k| rows[k][0, 2] })
    assert_equal picks.map { |k| rows[k][2] }, outcomes.map(&:label)
    stats = @classifier.stats.to_h
    assert_equal [43, 300, 0], stats.values_at('rpc_calls', 'classified_records', 'fallback_records')
  end

  test 'records the sidecar cannot classify get its answer and an error, their neighbours their labels' do
    entries = [
      ['BillingSystem', 'User 12345 logged in.'],
      ['BillingSystem', ''],                                  # empty
      ['BillingSystem', "caf\xE9 not utf-8".b],               # invalid UTF-8: sent as message_bytes
      ['BillingSystem', 'x' * 70_000],                        # over the sidecar's max_message_bytes
      ["Billing\xFFSystem".b, 'Backup completed successfully.'], # a source that is not UTF-8
      ['AnalyticsEngine', 'Backup completed successfully.'.encode('UTF-16LE')]
    ]
    outcomes = classifier(max_batch_bytes: 50_000).classify(entries)
    assert_equal [nil, 'empty_message', 'invalid_utf8', 'message_too_long', nil, nil], outcomes.map(&:error)
    assert_equal ['User Action', 'Unclassified', 'Unclassified', 'Unclassified', 'System Notification',
                  'System Notification'], outcomes.map(&:label)
    assert(outcomes.none?(&:fallback?))
    assert_equal 3, @classifier.stats.to_h['rpc_calls'], 'the 70 KB message went in a call of its own'
  end

  test 'records without a message pass untouched, or get the fallback when asked' do
    entries = [['a', nil], ['BillingSystem', 'User 12345 logged in.'], ['a', nil]]
    outcomes = classifier.classify(entries)
    assert_equal [nil, 'User Action', nil], outcomes.map { |o| o&.label }
    assert_equal 2, @classifier.stats.to_h['untouched_records']

    tagged = classifier(tag_missing_message: true, fallback_label: 'no-label').classify(entries)
    assert_equal [%w[no-label missing_message], ['User Action', nil], %w[no-label missing_message]],
                 tagged.map { |o| [o.label, o.fallback_reason] }
    assert_equal({ 'missing_message' => 2 }, @classifier.stats.to_h['fallback_records_by_reason'])
  end

  test 'threads sharing one classifier each get their own labels' do
    rows = LogclassTest.seed_rows
    shared = classifier(max_batch_records: 3)
    results = Array.new(4) do |t|
      Thread.new do
        picks = Array.new(40) { |i| (i + t) % rows.size }
        [picks.map { |k| rows[k][2] }, shared.classify(picks.map { |k| rows[k][0, 2] }).map(&:label)]
      end
    end.map(&:value)
    results.each { |expected, got| assert_equal expected, got }
  end

  test 'the model info names the served model and its limits' do
    info = classifier.model_info
    assert_match(/\Adefault@/, info.model_version)
    assert_equal 'Unclassified', info.fallback_label
    assert_operator info.max_records_per_request, :>=, 1000
  end

  # Last: it stops the shared sidecar (and resumes it, whatever happens).
  test 'a hung sidecar: one timeout per chunk, nothing while the circuit is open, a short probe, recovery' do
    rows = LogclassTest.seed_rows
    entries = rows.map { |s, m, _| [s, m] } * 3 # 30 records, 10 calls of 3 when healthy
    c = classifier(timeout: 2, max_batch_records: 3, circuit_failures: 2, circuit_cooldown: 2)
    assert_equal rows.map(&:last) * 3, c.classify(entries).map(&:label), 'warm channel first'

    timed = lambda do
      started = LogclassTest.monotonic
      outcomes = c.classify(entries)
      assert_equal 30, outcomes.size
      assert_equal ['Unclassified'], outcomes.map(&:label).uniq
      [LogclassTest.monotonic - started, outcomes.map(&:fallback_reason).uniq]
    end
    Sidecar.shared.pause
    begin
      first, second, open = Array.new(3) { timed.call }
      sleep 2.1 # the cool-down passes; the sidecar is still hung
      probe = timed.call
    ensure
      Sidecar.shared.resume
    end
    assert_equal ['deadline_exceeded'], first[1]
    # Bounds, not a point: a loaded CI machine is slow, but a timeout per call (3 calls) would be 6 s.
    assert_operator first[0], :>=, 1.5, 'the deadline was awaited'
    assert_operator first[0], :<, 3.9, 'one timeout for the whole chunk, not one per call'
    assert_equal ['deadline_exceeded'], second[1]
    assert_operator second[0], :>=, 1.5
    assert_operator second[0], :<, 3.9
    assert_equal ['circuit_open'], open[1]
    assert_operator open[0], :<, 0.5, 'the open circuit makes no call (a call would wait 2 s)'
    assert_equal ['deadline_exceeded'], probe[1]
    assert_operator probe[0], :>=, Logclass::Classifier::PROBE_TIMEOUT * 0.5
    assert_operator probe[0], :<, 1.9, 'the probe is short, not a full 2 s timeout'
    assert_equal :open, c.breaker.state
    assert_match(/2 Classify calls in a row to 127\.0\.0\.1:\d+ failed \(last: deadline_exceeded/, @log.string)
    assert_equal 1, @log.string.scan(/WARN logclass: Classify to .* failed \(deadline_exceeded/).size, 'rate limited'

    sleep 2.1 # another cool-down; the probe now finds the sidecar answering
    assert_equal rows.map(&:last) * 3, c.classify(entries).map(&:label)
    assert_equal :closed, c.breaker.state
    assert_match(/answers again/, @log.string)
    stats = c.stats.to_h
    assert_equal({ 'deadline_exceeded' => 90, 'circuit_open' => 30 }, stats['fallback_records_by_reason'])
    assert_equal [2, 3, 60], stats.values_at('circuit_opens', 'rpc_failures', 'classified_records')
  end
end
