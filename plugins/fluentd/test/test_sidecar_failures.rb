# frozen_string_literal: true

require_relative 'helper'
require 'socket'
require 'tmpdir'

# Fail open, lose nothing: a sidecar that dies (mid-call and mid-stream), a port with nothing on
# it, a server that accepts connections and never answers. Real sockets and processes throughout.
class SidecarFailuresTest < Test::Unit::TestCase
  self.test_order = :defined

  def self.startup
    @socket_dir = Dir.mktmpdir('logclass-sock')
    @sidecar = Sidecar.new(env: { 'LOGCLASS_SERVER__UNIX_SOCKET' => File.join(@socket_dir, 'sidecar.sock') }).start
  end

  def self.shutdown
    @sidecar&.stop
    FileUtils.rm_rf(@socket_dir) if @socket_dir
  end

  class << self
    attr_accessor :sidecar, :socket_dir
  end

  def classifier(endpoint, timeout: 10, **options)
    @logger, @log = LogclassTest.logger
    @classifier = Logclass::Classifier.new(Logclass::Client.new(endpoint, timeout: timeout), logger: @logger, **options)
  end

  teardown do
    @classifier&.close
  end

  # Chunk n: 50 records from the seed rows, each with its position in the whole stream.
  def chunk(n)
    rows = LogclassTest.seed_rows
    Array.new(50) do |i|
      source, message, label = rows[(n * 50 + i) % rows.size]
      { 'seq' => n * 50 + i, 'source' => source, 'message' => message, 'expected' => label }
    end
  end

  test 'the sidecar answers on its unix socket too' do
    rows = LogclassTest.seed_rows
    c = classifier("unix:#{File.join(self.class.socket_dir, 'sidecar.sock')}")
    assert_equal rows.map(&:last), c.classify(rows.map { |s, m, _| [s, m] }).map(&:label)
  end

  test 'a sidecar killed while a call is in flight: that call fails at once, its records fall back' do
    c = classifier(self.class.sidecar.address, timeout: 20, max_batch_records: 10)
    entries = chunk(0).map { |r| r.values_at('source', 'message') }
    assert_false c.classify(entries).any?(&:fallback?), 'healthy first'

    self.class.sidecar.pause # the request reaches the socket; nobody reads it
    call = Thread.new do
      started = LogclassTest.monotonic
      [c.classify(entries), LogclassTest.monotonic - started]
    end
    sleep 0.5
    self.class.sidecar.kill
    outcomes, seconds = call.value
    assert_equal 50, outcomes.size
    assert_equal [%w[Unclassified unavailable]], outcomes.map { |o| [o.label, o.fallback_reason] }.uniq
    assert_operator seconds, :<, 5, 'the reset connection fails the call, no 20 s deadline'
  end

  test 'killed mid-stream and restarted: zero records lost, fallbacks while down, labels again after' do
    self.class.sidecar.stop # killed by the test before; stopped here when this test runs alone
    sidecar = self.class.sidecar = Sidecar.new(port: self.class.sidecar.port).start
    c = classifier(sidecar.address, timeout: 2, max_batch_records: 10, circuit_failures: 2, circuit_cooldown: 1)
    tagger = Logclass::RecordTagger.new
    sent = []
    received = []
    killed = Queue.new
    feeder = Thread.new do
      40.times do |n|
        records = chunk(n)
        sent.concat(records)
        outcomes = c.classify(records.map { |r| r.values_at('source', 'message') })
        received.concat(records.zip(outcomes).map { |record, outcome| tagger.tag(record, outcome) })
        killed.push(:go) if n == 9 # ten chunks in, the sidecar dies
        sleep 0.02
      end
    end
    killed.pop
    sidecar.kill
    feeder.join

    assert_equal 2_000, sent.size
    assert_equal sent.map { |r| r['seq'] }, received.map { |r| r['seq'] }, 'every record, once, in order'
    received.each_with_index do |record, i|
      assert_equal sent[i], record.slice(*sent[i].keys), 'the record itself is unchanged'
    end
    classified, fell_back = received.partition { |r| r['log_label_fallback'].nil? }
    assert_operator classified.size, :>=, 500, 'the ten chunks before the kill'
    assert_operator fell_back.size, :>=, 1_000
    classified.each { |r| assert_equal r['expected'], r['log_label'] }
    assert_equal ['Unclassified'], fell_back.map { |r| r['log_label'] }.uniq
    assert_equal %w[circuit_open unavailable], fell_back.map { |r| r['log_label_fallback'] }.uniq.sort
    assert_equal fell_back.size, c.stats.to_h['fallback_records']
    assert_operator c.stats.to_h['rpc_failures'], :<=, 12, 'the open circuit spared most chunks a call'

    # Back on the same port: the probe after the cool-down finds it (reconnect backoff <= 5 s).
    self.class.sidecar = Sidecar.new(port: sidecar.port).start
    entries = chunk(0).map { |r| r.values_at('source', 'message') }
    deadline = LogclassTest.monotonic + 15
    outcomes = c.classify(entries)
    while outcomes.any?(&:fallback?) && LogclassTest.monotonic < deadline
      sleep 0.2
      outcomes = c.classify(entries)
    end
    assert_equal chunk(0).map { |r| r['expected'] }, outcomes.map(&:label)
    assert_equal :closed, c.breaker.state
    assert_match(/answers again/, @log.string)
  end

  test 'nothing listening: unavailable at once, every record passes with the fallback' do
    c = classifier("127.0.0.1:#{Sidecar.free_port}", timeout: 5)
    started = LogclassTest.monotonic
    outcomes = c.classify([%w[a b], ['a', nil], %w[c d]])
    assert_operator LogclassTest.monotonic - started, :<, 2
    assert_equal [%w[Unclassified unavailable], nil, %w[Unclassified unavailable]],
                 outcomes.map { |o| o && [o.label, o.fallback_reason] }
    assert_match(/Is the sidecar running and listening there/, @log.string)
  end

  test 'a server that accepts and never answers: the timeout path, bounded by timeout' do
    server = TCPServer.new('127.0.0.1', 0)
    held = []
    acceptor = Thread.new { loop { held << server.accept } }
    c = classifier("127.0.0.1:#{server.addr[1]}", timeout: 0.5, max_batch_records: 2)
    started = LogclassTest.monotonic
    outcomes = c.classify([%w[BillingSystem x]] * 9)
    seconds = LogclassTest.monotonic - started
    assert_equal ['deadline_exceeded'], outcomes.map(&:fallback_reason).uniq
    assert_equal 9, outcomes.size
    # 5 calls of 2 records: a deadline per call would take 2.5 s.
    assert_operator seconds, :>=, 0.4, 'the deadline was awaited'
    assert_operator seconds, :<, 1.9, 'one deadline for the chunk, not one per call of 2'
    assert_operator held.size, :>=, 1, 'the client really connected'
    assert_match(/The sidecar is slower than timeout: raise timeout/, @log.string)
  ensure
    acceptor&.kill
    held&.each(&:close)
    server&.close
  end

  # A real gRPC server speaking the proto, answering wrongly: a result short, or results out of order.
  class WrongAnswers < Logclass::V1::LogClassifier::Service
    attr_accessor :mode

    def classify(request, _call)
      results = request.records.map { |r| Logclass::V1::ClassifyResult.new(id: r.id, label: 'Wrong', tier: 'regex') }
      Logclass::V1::ClassifyResponse.new(results: mode == :short ? results[0..-2] : results.reverse)
    end
  end

  test 'answers that do not match the records one to one fall back as bad_response, never mislabel' do
    service = WrongAnswers.new
    server = GRPC::RpcServer.new(pool_size: 2)
    port = server.add_http2_port('127.0.0.1:0', :this_port_is_insecure)
    server.handle(service)
    runner = Thread.new { server.run }
    server.wait_till_running(10)
    c = classifier("127.0.0.1:#{port}", timeout: 5, circuit_failures: 10)
    %i[short reversed].each do |mode|
      service.mode = mode
      outcomes = c.classify([%w[a one], %w[a two], %w[a three]])
      assert_equal [%w[Unclassified bad_response]] * 3, outcomes.map { |o| [o.label, o.fallback_reason] }, mode.to_s
    end
    assert_match(/answered 2 results for 3 records/, @log.string)
  ensure
    server&.stop
    runner&.join(10)
  end
end
