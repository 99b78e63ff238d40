# frozen_string_literal: true

require_relative 'helper'

# One label for "not classified": records the sidecar could not decide carry its
# router.fallback_label, and so do records it was not asked about, unless fallback_label is set.
# The tier (none, pending or fallback) and the fallback reason still tell the cases apart.
class FallbackLabelTest < Test::Unit::TestCase
  Info = Struct.new(:fallback_label)

  # A sidecar that reports a label and then fails every Classify call, without a process.
  class DownSidecar
    attr_accessor :label

    def initialize(label)
      @label = label
    end

    def timeout = 1
    def target = 'fake:1'
    def close; end
    def model_info(**) = Info.new(@label)
    def classify(_records) = raise(Logclass::CallFailed.new('unavailable', 'down'))
  end

  def classifier(client, **options)
    logger, = LogclassTest.logger
    Logclass::Classifier.new(client, logger: logger, circuit_failures: 1, circuit_cooldown: 0, **options)
  end

  test 'unset: Unclassified until the sidecar reports its label, then that one' do
    c = classifier(DownSidecar.new('review'), tag_missing_message: true)
    assert_equal 'Unclassified', c.fallback_label
    c.model_info
    assert_equal [%w[review missing_message fallback], %w[review unavailable fallback]],
                 c.classify([['a', nil], %w[a m]]).map { |o| [o.label, o.fallback_reason, o.tier] }
  end

  test 'the probe after an outage learns the label of a sidecar that came back with another config' do
    sidecar = DownSidecar.new('review')
    c = classifier(sidecar)
    c.model_info
    sidecar.label = 'triage'
    c.classify([%w[a m]]) # opens the circuit
    assert_equal 'triage', c.classify([%w[a m]]).first.label, 'the probe asked GetModelInfo first'
  end

  test 'set: the configured label, whatever the sidecar reports' do
    c = classifier(DownSidecar.new('review'), fallback_label: 'relay-gave-up')
    c.model_info
    assert_equal 'relay-gave-up', c.classify([%w[a m]]).first.label
  end

  test 'a sidecar that reports no label leaves the default' do
    c = classifier(DownSidecar.new(''))
    c.model_info
    assert_equal 'Unclassified', c.fallback_label
  end
end
