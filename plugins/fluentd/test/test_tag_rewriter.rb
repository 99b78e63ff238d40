# frozen_string_literal: true

require_relative 'helper'

class TagRewriterTest < Test::Unit::TestCase
  def rewrite(tag, **options)
    Logclass::TagRewriter.new(**options).call(tag)
  end

  test 'add_tag_prefix, with or without its dot' do
    assert_equal 'classified.app.web', rewrite('app.web', add_prefix: 'classified.')
    assert_equal 'classified.app.web', rewrite('app.web', add_prefix: 'classified')
    assert_equal 'a.b.app', rewrite('app', add_prefix: 'a.b')
  end

  test 'remove_tag_prefix takes off whole leading parts only, then add_tag_prefix goes on' do
    assert_equal 'web', rewrite('app.web', remove_prefix: 'app')
    assert_equal 'web.x', rewrite('app.web.x', remove_prefix: 'app.')
    assert_equal 'apple.web', rewrite('apple.web', remove_prefix: 'app'), 'not a part of the tag'
    assert_equal 'app', rewrite('app', remove_prefix: 'app'), 'nothing would be left'
    assert_equal 'done.web', rewrite('app.web', remove_prefix: 'app', add_prefix: 'done')
    assert_equal 'done.other.web', rewrite('other.web', remove_prefix: 'app', add_prefix: 'done')
  end

  test 'a fixed tag for every chunk' do
    assert_equal 'labelled', rewrite('app.web', tag: 'labelled')
  end

  test 'no new tag, both kinds, or a malformed one: refused with the fix' do
    { {} => /need a new tag: set add_tag_prefix/,
      { tag: 'x', add_prefix: 'y' } => /either tag .* or add_tag_prefix\/remove_tag_prefix/,
      { tag: 'x', remove_prefix: 'y' } => /not both/,
      { add_prefix: '' } => /add_tag_prefix "" is not a tag/,
      { add_prefix: '.x' } => /is not a tag/,
      { remove_prefix: 'a..b' } => /remove_tag_prefix "a\.\.b" is not a tag/,
      { tag: 'two words' } => /tag "two words" is not a tag/ }.each do |options, message|
      error = assert_raise(Logclass::ConfigError, options.inspect) { Logclass::TagRewriter.new(**options) }
      assert_match message, error.message
    end
  end
end
