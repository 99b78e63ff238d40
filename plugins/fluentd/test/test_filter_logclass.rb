# frozen_string_literal: true

require_relative 'helper'
require_relative 'support/fluentd_tree'

# The Fluentd filter through Fluentd's own test driver, against the shared real sidecar (omitted,
# with the reason, without FLUENTD_LIB: see support/fluentd_tree.rb).
class FilterLogclassTest < Test::Unit::TestCase
  include Fluent::Test::Helpers if defined?(Fluent::Test::Helpers)

  setup do
    omit(FluentdTree::REASON) if FluentdTree::REASON
    Fluent::Test.setup
    @drivers = []
  end

  teardown do
    @drivers&.each { |d| d.instance_shutdown if d.instance.started? && !d.instance.closed? }
  end

  def driver(conf = '', endpoint: Sidecar.shared.address)
    d = Fluent::Test::Driver::Filter.new(Fluent::Plugin::LogclassFilter).configure("endpoint #{endpoint}\n#{conf}")
    @drivers << d
    d
  end

  def filter(d, records, tag: 'app.test')
    d.run(default_tag: tag) { d.feed(records.map { |r| [event_time, r] }) }
    d.filtered_records
  end

  test 'defaults, as the README lists them' do
    i = driver.instance
    assert_equal ['message', nil, nil, 'log_label', 'log_label_tier', 'log_label_confidence', 'log_label_fallback',
                  nil, nil, false, 5, nil, 1000, 4 << 20, 3, 10, 60],
                 [i.message_key, i.source_key, i.source, i.label_key, i.tier_key, i.confidence_key,
                  i.fallback_reason_key, i.error_key, i.fallback_label, i.tag_missing_message, i.timeout, i.budget_ms,
                  i.max_batch_records, i.max_batch_bytes, i.circuit_failures, i.circuit_cooldown, i.warn_interval]
  end

  test 'one chunk: every record labelled, in order, one call per max_batch_records' do
    rows = LogclassTest.seed_rows
    records = Array.new(25) { |i| { 'seq' => i, 'source' => rows[i % 10][0], 'message' => rows[i % 10][1] } }
    d = driver("source_key source\nmax_batch_records 10")
    out = filter(d, records)
    assert_equal (0...25).to_a, out.map { |r| r['seq'] }
    assert_equal Array.new(25) { |i| rows[i % 10][2] }, out.map { |r| r['log_label'] }
    assert_equal 'regex', out[1]['log_label_tier']
    assert_equal 1.0, out[1]['log_label_confidence']
    assert(out.none? { |r| r.key?('log_label_fallback') })
    stats = d.instance.statistics['filter']
    assert_equal [3, 25, 0], stats.values_at('logclass_rpc_calls', 'logclass_classified_records', 'logclass_fallback_records')
  end

  test 'nested message key, custom output keys, the sidecar error under error_key' do
    conf = "message_key $.log.msg\nlabel_key class\ntier_key\nconfidence_key score\nerror_key class_error\nsource BillingSystem"
    out = filter(driver(conf), [{ 'log' => { 'msg' => 'User 12345 logged in.' } }, { 'log' => { 'msg' => '' } }])
    assert_equal({ 'log' => { 'msg' => 'User 12345 logged in.' }, 'class' => 'User Action', 'score' => 1.0 }, out[0])
    assert_equal %w[Unclassified empty_message], out[1].values_at('class', 'class_error')
  end

  test 'records without the message pass untouched, or tagged when asked' do
    records = [{ 'other' => 1 }, { 'log' => 'not a hash' }, { 'message' => 'Backup completed successfully.' }]
    out = filter(driver('message_key $.log.msg'), records[0, 2]) + filter(driver, records[2, 1])
    assert_equal records[0, 2], out[0, 2]
    assert_equal 'System Notification', out[2]['log_label']

    tagged = filter(driver("tag_missing_message true\nfallback_label none-here"), [{ 'other' => 1 }])
    assert_equal [{ 'other' => 1, 'log_label' => 'none-here', 'log_label_tier' => 'fallback',
                    'log_label_confidence' => 0.0, 'log_label_fallback' => 'missing_message' }], tagged
  end

  test 'the tag is the source unless source_key or source says otherwise' do
    # LegacyCRM is routed to the LLM tier (absent here: the sidecar's fallback, tier none); the
    # same message from another source goes through the memory of the seed's templates. (A
    # LegacyCRM-style line from another source is out of the embedding tier's distribution: none.)
    message = 'Admin access escalation detected for user 9429'
    by_tag = filter(driver, [{ 'message' => message }], tag: 'LegacyCRM')
    assert_equal 'none', by_tag[0]['log_label_tier']
    by_source = filter(driver('source ModernHR'), [{ 'message' => message }], tag: 'LegacyCRM')
    assert_not_equal 'none', by_source[0]['log_label_tier']
  end

  test 'budget_ms goes with the calls: 0 answers a new template at once, pending; a long one waits for the model' do
    message, other = LogclassTest.novel_messages(2, start: 30_000)
    d = driver("budget_ms 0\nsource BillingSystem")
    out = filter(d, [{ 'message' => message }])
    assert_equal 0, d.instance.classifier.client.budget_ms
    assert_equal [{ 'message' => message, 'log_label' => 'Unclassified', 'log_label_tier' => 'pending',
                    'log_label_confidence' => 0.0 }], out, "the sidecar's own answer, no fallback reason"
    waited = filter(driver("budget_ms 20000\ntimeout 30s\nsource BillingSystem"), [{ 'message' => other }])
    assert_include %w[embedding none], waited[0]['log_label_tier']
  end

  test 'budget_ms not below timeout is warned about at start-up' do
    d = driver("budget_ms 5000\ntimeout 5s")
    assert_equal 1, d.logs.grep(/budget_ms 5000 is not below timeout 5/).size, d.logs.join
    assert_empty driver("budget_ms 4900\ntimeout 5s").logs.grep(/budget_ms/)
  end

  test 'a dead sidecar: every record passes with the fallback, one warning, then the open circuit' do
    d = driver("circuit_failures 2\ncircuit_cooldown 60", endpoint: "127.0.0.1:#{Sidecar.free_port}")
    records = Array.new(30) { |i| { 'seq' => i, 'message' => "m#{i}" } }
    d.run(default_tag: 'app') { 3.times { |k| d.feed(records[k * 10, 10].map { |r| [event_time, r] }) } }
    out = d.filtered_records
    assert_equal (0...30).to_a, out.map { |r| r['seq'] }
    assert_equal ['Unclassified'], out.map { |r| r['log_label'] }.uniq
    assert_equal ['unavailable'] * 20 + ['circuit_open'] * 10, out.map { |r| r['log_label_fallback'] }
    warnings = d.logs.grep(/\[warn\]/)
    assert_equal 1, warnings.grep(/Classify to .* failed \(unavailable/).size, warnings.join
    assert_equal 1, warnings.grep(/2 Classify calls in a row .* failed/).size, warnings.join
    assert_equal 1, warnings.grep(/does not answer yet/).size, 'said at start-up'
    assert_equal({ 'unavailable' => 20, 'circuit_open' => 10 },
                 d.instance.statistics['filter']['logclass_fallback_records_by_reason'])
  end

  test 'the bearer token is a secret: masked in the config dump, never in the log' do
    d = driver("bearer_token hunter2-secret\nendpoint 10.255.255.1:50051\ntimeout 0.2")
    assert_not_include d.instance.config.to_s, 'hunter2-secret'
    assert_include d.instance.config.to_s, 'bearer_token xxxxxx'
    out = filter(d, [{ 'message' => 'x' }]) # nothing answers there: the warnings carry the failure
    assert_equal 'Unclassified', out[0]['log_label']
    assert_include d.logs.join, 'the bearer token goes in plaintext to 10.255.255.1:50051'
    assert_not_include d.logs.join, 'hunter2-secret'
  end

  test 'bad settings stop fluentd at start-up with the fix' do
    { 'endpoint localhost' => /has no port: write host:port/,
      'max_batch_records 0' => /max_batch_records must be at least 1/,
      'tls_client_cert_path /x.pem' => /set both tls_client_cert_path and tls_client_key_path/,
      "bearer_token a\nbearer_token_path /t" => /not both/,
      'timeout 0' => /timeout must be more than 0/,
      'budget_ms -1' => /budget_ms must be a whole number of milliseconds from 0 to 4294967295 \(got -1\)/,
      'budget_ms 4294967296' => /budget_ms must be a whole number/ }.each do |conf, message|
      error = assert_raise(Fluent::ConfigError, conf) do
        Fluent::Test::Driver::Filter.new(Fluent::Plugin::LogclassFilter).configure("endpoint 127.0.0.1:1\n#{conf}")
      end
      assert_match message, error.message
    end
  end

  test 'an unexpected error in the plugin passes the chunk on as it came' do
    d = driver
    records = [{ 'message' => 'User 12345 logged in.' }, { 'message' => 'x' }]
    d.run(default_tag: 'app') do
      # A broken classifier (it raises TypeError on non-array input): the filter must not lose the chunk.
      d.instance.classifier.define_singleton_method(:classify) { |_entries, **| raise TypeError, 'boom' }
      d.feed(records.map { |r| [event_time, r] })
    end
    assert_equal records, d.filtered_records
    assert_include d.logs.join, 'passing 2 records on unclassified after an unexpected error'
  end
end
