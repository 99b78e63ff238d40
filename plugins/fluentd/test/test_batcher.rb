# frozen_string_literal: true

require_relative 'helper'

class BatcherTest < Test::Unit::TestCase
  def split(items, max_records:, max_bytes: 1 << 30, &size)
    Logclass::Batcher.new(max_records: max_records, max_bytes: max_bytes).split(items, &(size || ->(_) { 0 }))
  end

  test 'batches hold at most max_records, in order, every item once' do
    batches = split((0...2_503).to_a, max_records: 1_000)
    assert_equal [1_000, 1_000, 503], batches.map(&:size)
    assert_equal (0...2_503).to_a, batches.flatten
  end

  test 'an exact multiple leaves no empty batch, and nothing gives no batch' do
    assert_equal [[0, 1], [2, 3]], split([0, 1, 2, 3], max_records: 2)
    assert_equal [], split([], max_records: 2)
  end

  test 'batches stay under max_bytes, counting the per-record overhead' do
    overhead = Logclass::Batcher::RECORD_OVERHEAD
    sizes = [100, 100, 100, 100]
    batches = split((0...4).to_a, max_records: 100, max_bytes: 2 * (100 + overhead)) { |i| sizes[i] }
    assert_equal [[0, 1], [2, 3]], batches
  end

  test 'a record larger than max_bytes goes alone, so only its own call can fail' do
    sizes = [10, 5_000, 10, 10]
    batches = split((0...4).to_a, max_records: 100, max_bytes: 1_000) { |i| sizes[i] }
    assert_equal [[0], [1], [2, 3]], batches
  end

  test 'limits below 1 are refused with the setting named' do
    error = assert_raise(Logclass::ConfigError) { Logclass::Batcher.new(max_records: 0, max_bytes: 10) }
    assert_match(/max_batch_records must be at least 1/, error.message)
    error = assert_raise(Logclass::ConfigError) { Logclass::Batcher.new(max_records: 1, max_bytes: 0) }
    assert_match(/max_batch_bytes/, error.message)
  end
end
