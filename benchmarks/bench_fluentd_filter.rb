# frozen_string_literal: true

# Throughput and added latency of the Fluentd filter's batching path (plugins/fluentd) against a
# warm sidecar, with a pass-through baseline measured in the same run.
#
#   ruby benchmarks/bench_fluentd_filter.rb                  # starts its own sidecar
#   ruby benchmarks/bench_fluentd_filter.rb --endpoint 127.0.0.1:50051 --records 100000 --chunk 1000
#   FLUENTD_LIB=/tmp/fluentd/lib ruby benchmarks/bench_fluentd_filter.rb   # + the Fluentd adapter row
#
# Records: the seed set and the Loghub samples (30,410 messages) cycled up to --records, as
# Fluentd-like hashes, fed in chunks of --chunk records (one filter_stream call each).
# Rows:
#   passthrough        the filter's work minus the sidecar: read message and source, copy the
#                      record and write three constant keys. The baseline.
#   rpc_only           the Classify calls alone, requests built beforehand: the sidecar and the
#                      transport, the floor under the plugin's own cost.
#   logclass_warm      Logclass::Classifier + RecordTagger: batched Classify calls of at most
#                      --batch records; the sidecar has seen every message (exact-cache hits).
#   logclass_novel     (--novel) the same with each pass's digits rotated: messages the sidecar has
#                      not seen, so its template cache or the embedding model answers. This row
#                      measures the sidecar's classification work more than the plugin.
#   fluentd_adapter    (FLUENTD_LIB set) the real LogclassFilter#filter_stream, as warm.
# Per chunk: wall time of the whole chunk. Added latency = row's percentile minus passthrough's.
# The sidecar shares the machine's cores with this process: compare ratios within one run.
require 'csv'
require 'json'
require 'logger'
require 'optparse'

ROOT = File.expand_path('..', __dir__)
$LOAD_PATH.unshift(File.join(ROOT, 'plugins', 'fluentd', 'lib'))
require 'logclass'
require_relative '../plugins/fluentd/test/support/sidecar'

options = { records: 100_000, chunk: 1_000, batch: 1_000, endpoint: nil, json: nil, novel: false }
OptionParser.new do |o|
  o.on('--endpoint HOST:PORT', 'a running sidecar (default: start one)') { |v| options[:endpoint] = v }
  o.on('--records N', Integer, 'records per row (default 100000)') { |v| options[:records] = v }
  o.on('--chunk N', Integer, 'records per chunk, i.e. per filter_stream call (default 1000)') { |v| options[:chunk] = v }
  o.on('--batch N', Integer, 'max_batch_records (default 1000)') { |v| options[:batch] = v }
  o.on('--novel', 'add the logclass_novel row (digits rotated: unseen messages)') { options[:novel] = true }
  o.on('--json PATH', 'also write the figures as JSON') { |v| options[:json] = v }
end.parse!

def corpus
  rows = CSV.read(File.join(ROOT, 'training', 'data', 'synthetic_logs.csv'), headers: true)
             .map { |r| [r['source'], r['log_message']] }
  Dir[File.join(ROOT, 'benchmarks', 'data', 'loghub', '*_2k.log_structured.csv')].sort.each do |path|
    source = File.basename(path).split('_').first
    CSV.foreach(path, headers: true) { |r| rows << [source, r['Content']] }
  end
  rows
end

ROTATIONS = (1..9).map { |k| ['0123456789', '0123456789'.chars.rotate(k).join] }.freeze

# Chunks of Fluentd-like records; rotation k rotates every digit by k (0: messages as they are),
# changing with each pass over the corpus when `rotate` is set.
def chunks(rows, total, size, rotate:)
  records = Array.new(total) do |i|
    source, message = rows[i % rows.size]
    pass = i / rows.size
    message = message.tr(*ROTATIONS[pass % 9]) if rotate
    { 'message' => message, 'source' => source, 'host' => 'web-1', 'level' => 'info', 'seq' => i }
  end
  records.each_slice(size).to_a
end

def percentile(sorted, q)
  sorted[[(q * sorted.size).ceil - 1, 0].max]
end

# Runs the block on each chunk; `records` is how many records the chunks hold, all of which must
# come out.
def measure(name, chunks, records)
  times = []
  out = 0
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  chunks.each do |chunk|
    t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out += yield(chunk).size
    times << Process.clock_gettime(Process::CLOCK_MONOTONIC) - t
  end
  total = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
  raise "#{name}: #{out} records out of #{records}" unless out == records

  sorted = times.sort
  { 'row' => name, 'records' => records, 'seconds' => total.round(3), 'records_per_s' => (records / total).round,
    'p50_ms' => (percentile(sorted, 0.5) * 1000).round(2), 'p99_ms' => (percentile(sorted, 0.99) * 1000).round(2) }
end

rows = corpus
sidecar = options[:endpoint] ? nil : Sidecar.new.start
endpoint = options[:endpoint] || sidecar.address
begin
  logger = Logger.new($stderr, level: Logger::WARN)
  classifier = Logclass::Classifier.new(Logclass::Client.new(endpoint, timeout: 120), logger: logger,
                                                                                max_batch_records: options[:batch])
  tagger = Logclass::RecordTagger.new
  constant = Logclass::Outcome.new('User Action', 'regex', 1.0)
  info = classifier.model_info
  warn "sidecar #{endpoint}: #{info.model_version}, tiers #{info.tiers.to_a.join(',')}, #{info.embedding_device}"

  through_core = lambda do |chunk|
    entries = chunk.map { |r| [r['source'], r['message']] }
    outcomes = classifier.classify(entries)
    chunk.each_with_index.map { |r, i| tagger.tag(r, outcomes[i]) }
  end
  passthrough = lambda do |chunk|
    chunk.map do |r|
      [r['source'], r['message']]
      tagger.tag(r, constant)
    end
  end

  total = options[:records]
  warm = chunks(rows, total, options[:chunk], rotate: false)
  warn "warming up: the #{rows.size} corpus messages once, not timed"
  chunks(rows, rows.size, options[:chunk], rotate: false).each(&through_core)

  results = []
  results << measure('passthrough', warm, total, &passthrough)
  prepared = warm.map do |chunk|
    chunk.each_slice(options[:batch]).map do |batch|
      batch.each_with_index.map { |r, k| Logclass::Client.log_record(r['source'], r['message'], k.to_s) }
    end
  end
  results << measure('rpc_only', prepared, total) { |batches| batches.flat_map { |records| classifier.client.classify(records) } }
  results << measure('logclass_warm', warm, total, &through_core)
  results << measure('logclass_novel', chunks(rows, options[:records], options[:chunk], rotate: true), total, &through_core) if options[:novel]
  if ENV['FLUENTD_LIB'] && !ENV['FLUENTD_LIB'].empty?
    $LOAD_PATH.unshift(ENV['FLUENTD_LIB'])
    require 'fluent/test'
    require 'fluent/test/driver/filter'
    require 'fluent/plugin/filter_logclass'
    Fluent::Test.setup
    driver = Fluent::Test::Driver::Filter.new(Fluent::Plugin::LogclassFilter)
                                         .configure("endpoint #{endpoint}\nsource_key source\nmax_batch_records #{options[:batch]}\ntimeout 120")
    driver.instance_start
    filter = driver.instance
    now = Fluent::EventTime.now
    streams = warm.map do |chunk|
      es = Fluent::MultiEventStream.new
      chunk.each { |r| es.add(now, r) }
      es
    end
    results << measure('fluentd_adapter', streams, total) { |es| filter.filter_stream('app', es) }
    driver.instance_shutdown
  end
  results << measure('passthrough_again', warm, total, &passthrough)
  raise "fallbacks during the benchmark: #{classifier.stats.to_h}" unless classifier.stats.to_h['fallback_records'].zero?

  base = results.first
  puts format('%-20s %10s %10s %10s %10s %12s %12s %8s', 'row', 'records', 'seconds', 'rec/s', 'p50 ms', 'added p50', 'added p99', 'x base')
  results.each do |r|
    r['added_p50_ms'] = (r['p50_ms'] - base['p50_ms']).round(2)
    r['added_p99_ms'] = (r['p99_ms'] - base['p99_ms']).round(2)
    r['throughput_vs_passthrough'] = (r['records_per_s'].to_f / base['records_per_s']).round(4)
    puts format('%-20s %10d %10.2f %10d %10.2f %12.2f %12.2f %8.4f', r['row'], r['records'], r['seconds'],
                r['records_per_s'], r['p50_ms'], r['added_p50_ms'], r['added_p99_ms'], r['throughput_vs_passthrough'])
  end
  puts "chunk #{options[:chunk]} records, max_batch_records #{options[:batch]}; p99 per chunk: " +
       results.map { |r| "#{r['row']} #{r['p99_ms']} ms" }.join(', ')
  File.write(options[:json], JSON.pretty_generate('options' => options, 'sidecar' => info.model_version, 'rows' => results)) if options[:json]
ensure
  classifier&.close
  sidecar&.stop
end
