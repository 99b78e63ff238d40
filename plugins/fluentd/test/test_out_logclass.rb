# frozen_string_literal: true

require_relative 'helper'
require_relative 'support/fluentd_tree'
require_relative 'support/llm_stub'
require 'fileutils'
require 'msgpack'
require 'tmpdir'

# The Fluentd output through Fluentd's own test driver (Fluent::Test::Driver::Output) with a real
# buffer, against real sidecars: records written, the chunk flushed, the records re-emitted
# labelled under the new tag. Omitted, with the reason, without FLUENTD_LIB (see
# support/fluentd_tree.rb).
class OutLogclassTest < Test::Unit::TestCase
  include Fluent::Test::Helpers if defined?(Fluent::Test::Helpers)

  MEMORY = "<buffer>\n  @type memory\n</buffer>"
  # The parameters the output shares with the filter (LogclassCommon).
  SHARED = %i[endpoint message_key source_key source label_key tier_key confidence_key fallback_reason_key error_key
              fallback_label tag_missing_message timeout budget_ms max_batch_records max_batch_bytes circuit_failures
              circuit_cooldown warn_interval tls tls_ca_path tls_client_cert_path tls_client_key_path tls_server_name
              bearer_token bearer_token_path].freeze

  setup do
    omit(FluentdTree::REASON) if FluentdTree::REASON
    Fluent::Test.setup
    @drivers = []
    @dir = Dir.mktmpdir('logclass-out')
  end

  teardown do
    @drivers&.each { |d| d.instance_shutdown if d.instance.started? && !d.instance.closed? }
    FileUtils.rm_rf(@dir) if @dir
  end

  def driver(conf = 'add_tag_prefix classified', endpoint: Sidecar.shared.address, buffer: MEMORY)
    d = Fluent::Test::Driver::Output.new(Fluent::Plugin::LogclassOutput)
                                    .configure("endpoint #{endpoint}\n#{conf}\n#{buffer}")
    # Where Fluentd backs up a chunk it gives up on: here, not /tmp/fluent.
    d.instance.buffer.system_config_override(root_dir: @dir)
    @drivers << d
    d
  end

  # Waits for the re-emitted records too: Fluentd's driver stops waiting once a chunk is taken
  # from the queue, while this output may still be holding it.
  def feed(d, records, tag: 'app.test', expect_records: records.size, **run_options, &before)
    time = event_time
    d.run(default_tag: tag, expect_records: expect_records, timeout: 60, **run_options) do
      before&.call
      d.feed(records.map { |r| [time, r] })
    end
    time
  end

  # A <match> section as Fluentd hands it to the output (its argument is the pattern).
  def match_section(pattern, params)
    Fluent::Config.parse("<match #{pattern}>\n#{params}\n#{MEMORY}\n</match>", '(test)', '(test_dir)', syntax: :v1)
                  .elements.first
  end

  test 'defaults: a file buffer keyed by tag, flushed every second, retried until the re-emit goes; the filter\'s parameters' do
    i = driver('add_tag_prefix classified', buffer: "<buffer>\n  path #{@dir}/buffer\n</buffer>").instance
    b = i.buffer_config
    assert_equal [30, nil, 'classified', nil], [i.hold_timeout, i.tag, i.add_tag_prefix, i.remove_tag_prefix]
    assert_kind_of Fluent::Plugin::FileBuffer, i.buffer
    assert_equal [true, :interval, 1, 4, true, 30, 1000],
                 [i.chunk_key_tag, b.flush_mode, b.flush_interval, b.flush_thread_count, b.retry_forever,
                  b.retry_max_interval, i.buffer.chunk_limit_records]
    assert_equal 40.0, i.slow_flush_log_threshold, 'a held chunk is not a slow flush'

    filter = Fluent::Test::Driver::Filter.new(Fluent::Plugin::LogclassFilter).configure("endpoint #{Sidecar.shared.address}").instance
    assert_equal SHARED.map { |name| filter.public_send(name) }, SHARED.map { |name| i.public_send(name) }
  end

  test 'a chunk: every record labelled, in order, re-emitted under the new tag with its time' do
    rows = LogclassTest.seed_rows
    records = Array.new(25) { |i| { 'seq' => i, 'source' => rows[i % 10][0], 'message' => rows[i % 10][1] } }
    d = driver("add_tag_prefix classified.\nsource_key source")
    time = feed(d, records, shutdown: false)
    events = d.events
    assert_equal ['classified.app.test'], events.map(&:first).uniq
    assert(events.all? { |e| e[1] == time })
    assert_equal (0...25).to_a, events.map { |e| e[2]['seq'] }
    assert_equal Array.new(25) { |i| rows[i % 10][2] }, events.map { |e| e[2]['log_label'] }
    assert_equal %w[regex 1.0], [events[1][2]['log_label_tier'], events[1][2]['log_label_confidence'].to_s]
    assert(events.none? { |e| e[2].key?('log_label_fallback') })
    stats = d.instance.statistics['output']
    assert_equal [1, 25, 0, 1], stats.values_at('logclass_rpc_calls', 'logclass_classified_records',
                                                'logclass_fallback_records', 'write_count')
  end

  test 'a chunk per tag: each re-emitted under its own rewritten tag; the tag is the source' do
    d = driver("remove_tag_prefix app\nadd_tag_prefix done\nlabel_key class\ntier_key\nerror_key class_error")
    d.run(expect_records: 2, timeout: 60) do
      d.feed('app.BillingSystem', event_time, { 'message' => 'User 12345 logged in.' })
      d.feed('app.web', event_time, { 'message' => '' })
    end
    assert_equal [['done.BillingSystem', { 'message' => 'User 12345 logged in.', 'class' => 'User Action', 'log_label_confidence' => 1.0 }],
                  ['done.web', { 'message' => '', 'class' => 'Unclassified', 'log_label_confidence' => 0.0, 'class_error' => 'empty_message' }]],
                 d.events.map { |tag, _, record| [tag, record] }.sort_by(&:first)

    fixed = driver('tag labelled')
    fixed.run(expect_records: 2, timeout: 60) do
      fixed.feed('a.one', event_time, { 'message' => 'x' })
      fixed.feed('b.two', event_time, { 'message' => 'y' })
    end
    assert_equal %w[labelled labelled], fixed.events.map(&:first)
  end

  test 'a new template the LLM must answer: the output holds the chunk for its label, the filter leaves it pending' do
    sidecar = LlmSidecar.shared
    held, passed = LogclassTest.novel_messages(2, start: 50_000)
    d = driver(endpoint: sidecar.address) # LegacyCRM, the tag, is the source the bundle routes to the LLM
    feed(d, [{ 'message' => held }], tag: 'LegacyCRM')
    assert_equal [['classified.LegacyCRM', LlmSidecar::ANSWER, 'llm']],
                 d.events.map { |tag, _, r| [tag, r['log_label'], r['log_label_tier']] }

    f = Fluent::Test::Driver::Filter.new(Fluent::Plugin::LogclassFilter).configure("endpoint #{sidecar.address}")
    @drivers << f
    f.run(default_tag: 'LegacyCRM') { f.feed(event_time, { 'message' => passed }) }
    assert_equal [%w[Unclassified pending]], f.filtered_records.map { |r| r.values_at('log_label', 'log_label_tier') }
  end

  test 'shutting down while a chunk is held: the chunk is written and re-emitted before the output stops' do
    message = LogclassTest.novel_messages(1, start: 51_000).first
    d = driver(endpoint: LlmSidecar.shared.address)
    # No records expected: the driver shuts down as soon as the chunk leaves the queue, while the
    # LLM still takes a second to answer.
    feed(d, [{ 'message' => message }], tag: 'LegacyCRM', expect_records: nil)
    assert_equal [[LlmSidecar::ANSWER, 'llm']], d.events.map { |_, _, r| r.values_at('log_label', 'log_label_tier') }, d.logs.join
    assert_empty d.logs.grep(/unrecoverable|backup/), d.logs.join
  end

  test 'a sidecar that is down: every record re-emitted with the fallback label, none dropped' do
    d = driver("add_tag_prefix classified\nmax_batch_records 10", endpoint: "127.0.0.1:#{Sidecar.free_port}")
    records = Array.new(30) { |i| { 'seq' => i, 'message' => "m#{i}" } } + [{ 'seq' => 30 }]
    feed(d, records, shutdown: false)
    out = d.events.map(&:last)
    assert_equal (0..30).to_a, out.map { |r| r['seq'] }
    assert_equal [%w[Unclassified fallback unavailable]] * 30,
                 out[0, 30].map { |r| r.values_at('log_label', 'log_label_tier', 'log_label_fallback') }
    assert_equal({ 'seq' => 30 }, out[30], 'no message: untouched')
    assert_equal({ 'unavailable' => 30 }, d.instance.statistics['output']['logclass_fallback_records_by_reason'])
  end

  test 'a file buffer: records written before a restart are labelled and re-emitted after it' do
    buffer = "<buffer>\n  path #{@dir}/buffer\n  flush_interval 1h\n</buffer>"
    records = Array.new(10) { |i| { 'seq' => i, 'message' => LogclassTest.seed_rows[i][1] } }
    before = driver('add_tag_prefix classified', buffer: buffer)
    feed(before, records, flush: false, expect_records: nil) # shut down with the chunk still waiting
    assert_empty before.events
    assert_not_empty Dir.glob(File.join(@dir, 'buffer', 'buffer.*')), 'the chunk is on disk'

    after = driver('add_tag_prefix classified', buffer: buffer)
    after.run(expect_records: 10, timeout: 60) { nil } # nothing new: the chunk resumed from disk is flushed
    assert_equal (0...10).to_a, after.events.map { |e| e[2]['seq'] }
    assert_equal ['classified.app.test'], after.events.map(&:first).uniq
    assert(after.events.all? { |e| e[2]['log_label'] && e[2]['log_label_tier'] != 'fallback' })
    assert_empty Dir.glob(File.join(@dir, 'buffer', 'buffer.*')), 'committed once re-emitted'
  end

  test 'at-least-once: a re-emit that raises leaves the chunk in the buffer, and the retry delivers it' do
    d = driver('add_tag_prefix classified',
               buffer: "<buffer>\n  @type memory\n  retry_wait 0.1\n  retry_randomize false\n</buffer>")
    refusals = [1]
    feed(d, [{ 'seq' => 0, 'message' => 'User 12345 logged in.' }, { 'seq' => 1, 'message' => 'x' }],
         force_flush_retry: true, shutdown: false) do
      router = d.instance.router
      emit = router.method(:emit_stream)
      router.define_singleton_method(:emit_stream) do |tag, es|
        raise 'the next output is full' if (refusals[0] -= 1) >= 0

        emit.call(tag, es)
      end
    end
    assert_equal [0, 1], d.events.map { |e| e[2]['seq'] }, 'delivered once, after the retry'
    assert_equal 'User Action', d.events[0][2]['log_label']
    stats = d.instance.statistics['output']
    assert_equal [2, 1], stats.values_at('write_count', 'rollback_count')
    assert_equal 2, stats['logclass_rpc_calls'], 'the retry classifies the chunk again'
  end

  test 'a certain loop is refused at start-up: the new tag would match this <match> again' do
    { ['app.**', 'tag app.labelled'] => /<match app\.\*\*> would catch its own records again: app\.x is re-emitted as app\.labelled/,
      ['**', 'add_tag_prefix classified'] => /x is re-emitted as classified\.x, which it matches/,
      ['{app,web}.**', 'add_tag_prefix app.done'] => /app\.x is re-emitted as app\.done\.app\.x/,
      ['', 'add_tag_prefix classified'] => /<match \*\*>/ }.each do |(pattern, params), message|
      error = assert_raise(Fluent::ConfigError, pattern) do
        Fluent::Test::Driver::Output.new(Fluent::Plugin::LogclassOutput).configure(match_section(pattern, params))
      end
      assert_match message, error.message
    end
    [['app.**', 'add_tag_prefix classified'], ['app.** web.*', 'add_tag_prefix classified'],
     ['app.**', "remove_tag_prefix app\nadd_tag_prefix classified"], ['/^app\..*/', 'tag app.x']].each do |pattern, params|
      assert_nothing_raised(pattern) do
        Fluent::Test::Driver::Output.new(Fluent::Plugin::LogclassOutput).configure(match_section(pattern, params))
      end
    end
  end

  test 'a catch-all <match> is no loop when an earlier <match> takes the new tag first' do
    earlier = Fluent::EventRouter.new(nil, nil)
    earlier.add_rule('classified.**', Object.new)
    output = Fluent::Plugin::LogclassOutput.new
    output.singleton_class.prepend(Module.new { define_method(:event_emitter_router) { |_label| earlier } })
    assert_nothing_raised { output.configure(match_section('**', 'add_tag_prefix classified')) }
  end

  test 'a loop at run time: the chunk goes to the backup directory, not round and round' do
    d = driver('add_tag_prefix classified')
    backups = -> { Dir.glob(File.join(@dir, 'backup', '**', '*.log')) }
    d.end_if { backups.call.any? }
    feed(d, [{ 'message' => 'User 12345 logged in.' }], expect_records: nil) do
      output = d.instance
      # A router that hands the records back to this output, as a <match> catching the new tag would.
      output.router.define_singleton_method(:emit_stream) { |tag, es| output.emit_events(tag, es) }
    end
    assert_empty d.events
    assert_equal 1, d.logs.grep(/records re-emitted under tag classified\.app\.test came back to this output/).size, d.logs.join
    assert_equal 1, backups.call.size, d.logs.join
    unpacker = Fluent::MessagePackFactory.msgpack_unpacker
    unpacker.feed(File.binread(backups.call.first))
    assert_equal [{ 'message' => 'User 12345 logged in.' }], unpacker.each.map(&:last), 'the chunk as it came in'
  end

  test 'bad settings stop fluentd at start-up with the fix' do
    { '' => /need a new tag: set add_tag_prefix/,
      "tag a\nadd_tag_prefix b" => /not both/,
      "add_tag_prefix classified\n<buffer time>\n@type memory\ntimekey 60\n</buffer>" => /needs tag among its chunk keys/,
      "add_tag_prefix classified\nhold_timeout 2" => /hold_timeout 2(\.0)?s is below timeout 5(\.0)?s/,
      "add_tag_prefix classified\nmax_batch_records 0" => /max_batch_records must be at least 1/,
      "add_tag_prefix classified\nendpoint localhost" => /has no port/,
      'add_tag_prefix ..' => /is not a tag/ }.each do |conf, message|
      buffer = conf.include?('<buffer') ? '' : MEMORY
      error = assert_raise(Fluent::ConfigError, conf) do
        Fluent::Test::Driver::Output.new(Fluent::Plugin::LogclassOutput).configure("endpoint 127.0.0.1:1\n#{conf}\n#{buffer}")
      end
      assert_match message, error.message
    end
    error = assert_raise(Fluent::ConfigError) do
      Fluent::Test::Driver::Output.new(Fluent::Plugin::LogclassOutput).configure('add_tag_prefix classified')
    end
    assert_match(/buffers in files by default, so records survive a restart .* set path in <buffer>/, error.message)
  end
end
