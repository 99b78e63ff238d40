# frozen_string_literal: true

require_relative 'helper'

class CircuitBreakerTest < Test::Unit::TestCase
  setup do
    @now = 100.0
    @breaker = Logclass::CircuitBreaker.new(failures: 3, cooldown: 10, clock: -> { @now })
  end

  test 'opens after `failures` failures in a row, not before' do
    assert_false @breaker.failure
    assert_false @breaker.failure
    assert_equal :call, @breaker.permit
    assert_true @breaker.failure, 'the third failure opens it'
    assert_equal :open, @breaker.state
    assert_nil @breaker.permit
  end

  test 'a success in between resets the count' do
    2.times { @breaker.failure }
    assert_false @breaker.success, 'closing a closed circuit is no transition'
    2.times { assert_false @breaker.failure }
    assert_equal :closed, @breaker.state
  end

  test 'after the cool-down one probe goes through; its success closes the circuit' do
    3.times { @breaker.failure }
    @now += 9.9
    assert_nil @breaker.permit
    @now += 0.1
    assert_equal :probe, @breaker.permit, 'the probe'
    assert_equal :half_open, @breaker.state
    assert_nil @breaker.permit, 'only one probe at a time'
    assert_true @breaker.success
    assert_equal :closed, @breaker.state
    assert_equal :call, @breaker.permit
  end

  test 'a failed probe opens it for another full cool-down' do
    3.times { @breaker.failure }
    @now += 10
    assert_equal :probe, @breaker.permit
    assert_true @breaker.failure, 'one failed probe is enough'
    @now += 9
    assert_nil @breaker.permit
    @now += 1
    assert_equal :probe, @breaker.permit
  end

  test 'a probe that never reports does not keep the circuit shut for good' do
    3.times { @breaker.failure }
    @now += 10
    assert_equal :probe, @breaker.permit
    @now += 10
    assert_equal :probe, @breaker.permit, 'a new probe after another cool-down'
  end

  test 'is safe under concurrent callers: exactly one probe among many threads' do
    3.times { @breaker.failure }
    @now += 10
    allowed = Array.new(16) { Thread.new { @breaker.permit } }.map(&:value)
    assert_equal [:probe], allowed.compact
  end

  test 'bad settings are refused with the setting named' do
    assert_raise_message(/circuit_failures must be at least 1/) { Logclass::CircuitBreaker.new(failures: 0, cooldown: 1) }
    assert_raise_message(/circuit_cooldown/) { Logclass::CircuitBreaker.new(failures: 1, cooldown: -1) }
  end
end
