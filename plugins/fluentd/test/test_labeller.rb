# frozen_string_literal: true

require_relative 'helper'
require_relative 'support/llm_stub'
require 'socket'

# Logclass::Labeller, the core of both plugins, without Fluentd: the output's (a hold: the chunk
# waits for model answers) next to the filter's (no hold: each call waits its budget). Against
# real sidecars: one whose LLM tier is a slow stub (support/llm_stub.rb), the shared one, nothing
# listening, and a TCP server that never answers.
class LabellerTest < Test::Unit::TestCase
  HOLD = 30

  def labeller(endpoint, hold: nil, timeout: 30, budget_ms: nil, reader: nil, tagger: Logclass::RecordTagger.new,
               **options)
    @logger, @log = LogclassTest.logger
    client = Logclass::Client.new(endpoint, timeout: timeout, budget_ms: budget_ms)
    classifier = Logclass::Classifier.new(client, logger: @logger, **options)
    (@classifiers ||= []) << classifier
    reader ||= Logclass::RecordReader.new(message: ->(r) { r['message'] }, source: ->(r) { r['service'] })
    Logclass::Labeller.new(classifier, reader: reader, tagger: tagger, logger: @logger, hold: hold)
  end

  teardown do
    @classifiers&.each(&:close)
    @silent&.close
  end

  def timed
    started = LogclassTest.monotonic
    [yield, LogclassTest.monotonic - started]
  end

  test 'held: a new template waits for the slow LLM and gets its label; the filter\'s budget gives pending' do
    sidecar = LlmSidecar.shared
    held_message, filter_message = LogclassTest.novel_messages(2, start: 40_000)
    known = { 'service' => 'BillingSystem', 'message' => 'User 12345 logged in.' }

    out, seconds = timed { labeller(sidecar.address).label('app', [{ 'service' => 'LegacyCRM', 'message' => filter_message }]) }
    assert_equal [{ 'service' => 'LegacyCRM', 'message' => filter_message, 'log_label' => 'Unclassified',
                    'log_label_tier' => 'pending', 'log_label_confidence' => 0.0 }], out,
                 'no hold: the sidecar answers when its inline budget (250 ms) ends, before the LLM'
    assert_operator seconds, :<, LlmSidecar::DELAY

    records = [{ 'seq' => 0, 'service' => 'LegacyCRM', 'message' => held_message }, known.merge('seq' => 1),
               { 'seq' => 2, 'other' => 'no message' }]
    out, seconds = timed { labeller(sidecar.address, hold: HOLD).label('app', records) }
    assert_equal [0, 1, 2], out.map { |r| r['seq'] }
    assert_equal [LlmSidecar::ANSWER, 'llm', 1.0], out[0].values_at('log_label', 'log_label_tier', 'log_label_confidence'),
                 'held: the LLM answer, not pending'
    assert_equal %w[User\ Action regex], out[1].values_at('log_label', 'log_label_tier')
    assert_equal records[2], out[2], 'no message: untouched, as the filter leaves it'
    assert_operator seconds, :>=, LlmSidecar::DELAY * 0.9, 'it waited for the LLM'
    assert_operator seconds, :<, HOLD
    assert(LlmSidecar.llm.questions.any? { |q| q.include?(held_message) })
    assert(out.none? { |r| r.key?('log_label_fallback') })
  end

  test 'the hold bounds the wait: an answer slower than the hold comes back pending at its end' do
    message = "#{LogclassTest.novel_messages(1, start: 41_000).first} #{LlmSidecar::SLOW_WORD}"
    out, seconds = timed do
      labeller(LlmSidecar.shared.address, hold: 2, timeout: 1).label('app', [{ 'service' => 'LegacyCRM', 'message' => message }])
    end
    assert_equal %w[Unclassified pending], out[0].values_at('log_label', 'log_label_tier'),
                 "the sidecar's answer at the hold's end (not a failed call): #{@log.string}"
    assert_false out[0].key?('log_label_fallback')
    assert_operator seconds, :>=, 1.5
    assert_operator seconds, :<, LlmSidecar::SLOW_DELAY - 1, 'not the LLM answer time'
  end

  test 'a sidecar that is down: every record leaves with the fallback label, in order, none dropped, no wait' do
    records = Array.new(25) { |i| { 'seq' => i, 'service' => 'BillingSystem', 'message' => "event #{i}" } }
    records << { 'seq' => 25, 'other' => 1 }
    l = labeller("127.0.0.1:#{Sidecar.free_port}", hold: HOLD, max_batch_records: 10)
    out, seconds = timed { l.label('app', records) }
    assert_equal (0..25).to_a, out.map { |r| r['seq'] }
    assert_equal [%w[Unclassified fallback unavailable]] * 25,
                 out[0, 25].map { |r| r.values_at('log_label', 'log_label_tier', 'log_label_fallback') }
    assert_equal records[25], out[25]
    assert_operator seconds, :<, 5, 'nothing listening fails at once, hold or not'
    assert_equal({ 'unavailable' => 25 }, l.classifier.stats.to_h['fallback_records_by_reason'])
    assert_match(/Classify to 127\.0\.0\.1:\d+ failed \(unavailable/, @log.string)
  end

  test 'a sidecar that never answers: the chunk falls back after the hold, not after each call' do
    @silent = TCPServer.new('127.0.0.1', 0) # accepts (the kernel does), never speaks HTTP/2
    records = Array.new(30) { |i| { 'seq' => i, 'message' => "m#{i}" } }
    l = labeller("127.0.0.1:#{@silent.addr[1]}", hold: 2, timeout: 1, max_batch_records: 10)
    out, seconds = timed { l.label('app', records) }
    assert_equal (0...30).to_a, out.map { |r| r['seq'] }
    assert_equal ['deadline_exceeded'], out.map { |r| r['log_label_fallback'] }.uniq
    assert_operator seconds, :>=, 1.8
    assert_operator seconds, :<, 4, 'one deadline (the hold) for the chunk; the other batches fell back without calls'
  end

  test 'hostile records: held, each comes out as the filter labels it' do
    reader = Logclass::RecordReader.new(message: ->(r) { r.dig('log', 'msg') }, source: ->(r) { r['service'] })
    tagger = Logclass::RecordTagger.new(error_key: 'log_label_error')
    records = [
      { 'log' => { 'msg' => 'User 12345 logged in.' }, 'service' => 'BillingSystem' },
      { 'service' => 'BillingSystem' },                                       # no message key
      { 'log' => 'not a hash' },                                              # the path runs through a string
      { 'log' => { 'msg' => "caf\xE9 latin-1 bytes".b } },                    # not UTF-8
      { 'log' => { 'msg' => "x#{'y' * 300_000}" } },                          # over max_message_bytes
      { 'log' => { 'msg' => '' } },                                           # empty
      { 'log' => { 'msg' => { 'nested' => 'Backup completed successfully.' } } }, # structured: sent as JSON
      { 'log' => { 'msg' => 42 } },                                           # a number: sent as text
      { 'log' => { 'msg' => 'Backup completed successfully.' }, 'service' => "Billing\xFF".b } # source not UTF-8
    ]
    inputs = Marshal.load(Marshal.dump(records))
    held = labeller(Sidecar.shared.address, hold: HOLD, reader: reader, tagger: tagger).label('app', records)
    filtered = labeller(Sidecar.shared.address, reader: reader, tagger: tagger).label('app', records)
    assert_equal inputs, records, 'the input records are not modified'
    assert_equal records.size, held.size
    assert_equal filtered, held
    assert_equal [nil, nil, nil, 'invalid_utf8', 'message_too_long', 'empty_message', nil, nil, nil],
                 held.map { |r| r['log_label_error'] }
    assert_equal records[1, 2], held[1, 2], 'no message: untouched'
    assert_equal 'User Action', held[0]['log_label']
    assert_equal 'System Notification', held[8]['log_label']
    assert(held.none? { |r| r.key?('log_label_fallback') }, @log.string)
  end

  test 'missing messages tagged when asked; the fallback label the sidecar reports' do
    l = labeller(Sidecar.shared.address, hold: HOLD, tag_missing_message: true)
    l.classifier.model_info
    out = l.label('app', [{ 'other' => 1 }])
    assert_equal [{ 'other' => 1, 'log_label' => 'Unclassified', 'log_label_tier' => 'fallback',
                    'log_label_confidence' => 0.0, 'log_label_fallback' => 'missing_message' }], out
  end

  test 'the source: the record\'s, else the fixed one, else the tag' do
    seen = []
    fake = Object.new
    fake.define_singleton_method(:classify) do |entries, hold:|
      seen << [entries, hold]
      Array.new(entries.size)
    end
    reader = Logclass::RecordReader.new(message: ->(r) { r['message'] }, source: ->(r) { r['service'] })
    logger, = LogclassTest.logger
    Logclass::Labeller.new(fake, reader: reader, tagger: Logclass::RecordTagger.new, logger: logger, hold: 7)
                      .label('app.web', [{ 'message' => 'a', 'service' => 'svc' }, { 'message' => 'b' }])
    fixed = Logclass::RecordReader.new(message: ->(r) { r['message'] }, fixed_source: 'Fixed')
    assert_equal [[[%w[svc a], %w[app.web b]], 7]], seen
    assert_equal %w[Fixed m], fixed.entry('app.web', { 'message' => 'm' })
  end

  test 'a bug in the classifier: the records go on unlabelled, the error logged' do
    broken = Object.new
    broken.define_singleton_method(:classify) { |_entries, **| raise TypeError, 'boom' }
    logger, log = LogclassTest.logger
    reader = Logclass::RecordReader.new(message: ->(r) { r['message'] })
    records = [{ 'message' => 'a' }, { 'message' => 'b' }]
    out = Logclass::Labeller.new(broken, reader: reader, tagger: Logclass::RecordTagger.new, logger: logger, hold: 1)
                            .label('app', records)
    assert_equal records, out
    assert_include log.string, 'passing 2 records on unclassified after an unexpected error (TypeError: boom)'
  end

  test 'a hold is a positive number of seconds' do
    logger, = LogclassTest.logger
    [0, -1, '30'].each do |bad|
      error = assert_raise(Logclass::ConfigError) do
        Logclass::Labeller.new(Object.new, reader: nil, tagger: nil, logger: logger, hold: bad)
      end
      assert_match(/hold_timeout must be more than 0 seconds/, error.message)
    end
  end
end
