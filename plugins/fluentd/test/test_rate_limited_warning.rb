# frozen_string_literal: true

require_relative 'helper'

class RateLimitedWarningTest < Test::Unit::TestCase
  setup do
    @now = 0.0
    @logger, @io = LogclassTest.logger
    @warning = Logclass::RateLimitedWarning.new(@logger, interval: 60, clock: -> { @now })
  end

  def lines
    @io.string.lines.map(&:chomp)
  end

  test 'one line per interval however many failures, then a summary of what was held back' do
    assert_true @warning.warn('down', reason: 'unavailable', records: 10)
    50.times { |i| @now += 1; assert_false @warning.warn("down #{i}", reason: 'unavailable', records: 10) }
    @warning.warn('open', reason: 'circuit_open', records: 5)
    assert_equal ['WARN down'], lines
    @now += 10 # 61 s after the first line
    assert_true @warning.warn('down again', reason: 'unavailable', records: 7)
    assert_equal 2, lines.size
    assert_equal 'WARN down again (since the last warning 505 more records fell back: circuit_open: 5, unavailable: 500)',
                 lines.last
  end

  test 'the held-back count starts over after each line' do
    @warning.warn('a', reason: 'x', records: 1)
    @now += 1
    @warning.warn('b', reason: 'x', records: 2)
    @now += 60
    @warning.warn('c', reason: 'x', records: 3)
    @now += 60
    @warning.warn('d', reason: 'x', records: 4)
    assert_equal ['WARN a', 'WARN c (since the last warning 2 more records fell back: x: 2)', 'WARN d'], lines
  end
end
