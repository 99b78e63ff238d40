# frozen_string_literal: true

require_relative 'helper'

class RecordTaggerTest < Test::Unit::TestCase
  DECIDED = Logclass::Outcome.new('User Action', 'regex', 1.0)

  test 'writes label, tier and confidence into a copy, leaving the input record alone' do
    record = { 'message' => 'User 12345 logged in.' }
    tagged = Logclass::RecordTagger.new.tag(record, DECIDED)
    assert_equal({ 'message' => 'User 12345 logged in.', 'log_label' => 'User Action', 'log_label_tier' => 'regex',
                   'log_label_confidence' => 1.0 }, tagged)
    assert_equal({ 'message' => 'User 12345 logged in.' }, record)
  end

  test 'a fallback carries its reason; a sidecar error goes under error_key when one is set' do
    tagger = Logclass::RecordTagger.new(error_key: 'log_label_error')
    fallback = tagger.tag({}, Logclass::Outcome.fallback('Unclassified', 'unavailable'))
    assert_equal({ 'log_label' => 'Unclassified', 'log_label_tier' => 'fallback', 'log_label_confidence' => 0.0,
                   'log_label_fallback' => 'unavailable' }, fallback)
    errored = tagger.tag({}, Logclass::Outcome.new('Unclassified', 'none', 0.0, 'empty_message'))
    assert_equal 'empty_message', errored['log_label_error']
    assert_false errored.key?('log_label_fallback')
  end

  test 'custom keys; a nil or empty key is not written; no outcome leaves the very same record' do
    tagger = Logclass::RecordTagger.new(label_key: 'class', tier_key: '', confidence_key: nil)
    assert_equal({ 'class' => 'User Action' }, tagger.tag({}, DECIDED))
    record = { 'x' => 1 }
    assert_same record, tagger.tag(record, nil)
  end
end
