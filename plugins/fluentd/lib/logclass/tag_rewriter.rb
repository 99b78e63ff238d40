# frozen_string_literal: true

require_relative 'errors'

module Logclass
  # The tag the output re-emits a chunk's records under: a fixed `tag`, or the chunk's own tag
  # with `remove_tag_prefix` taken off and then `add_tag_prefix` put on. Prefixes are dot
  # separated parts of the tag, written with or without the trailing dot ("classified" and
  # "classified." both turn app.web into classified.app.web), as in_forward's add_tag_prefix.
  class TagRewriter
    attr_reader :tag, :add_prefix, :remove_prefix

    def initialize(tag: nil, add_prefix: nil, remove_prefix: nil)
      @tag = tag && checked('tag', tag)
      @add_prefix = add_prefix && "#{checked('add_tag_prefix', add_prefix)}."
      @remove_prefix = remove_prefix && "#{checked('remove_tag_prefix', remove_prefix)}."
      if @tag && (@add_prefix || @remove_prefix)
        raise ConfigError, 'set either tag (one tag for every record) or add_tag_prefix/remove_tag_prefix ' \
                           '(the chunk\'s tag rewritten), not both'
      end
      return if @tag || @add_prefix || @remove_prefix

      raise ConfigError, 'the labelled records need a new tag: set add_tag_prefix (e.g. classified), ' \
                         'remove_tag_prefix, or tag; re-emitted under their own tag they would come back to this output'
    end

    def call(tag)
      return @tag if @tag

      # Only a whole leading part goes: "app" is not taken off "apple.web", nor off "app" itself,
      # which would leave no tag at all.
      out = @remove_prefix && tag.start_with?(@remove_prefix) ? tag[@remove_prefix.size..] : tag
      @add_prefix ? "#{@add_prefix}#{out}" : out
    end

    private

    def checked(name, value)
      text = value.to_s.strip.delete_suffix('.')
      if text.empty? || text.start_with?('.') || text.include?('..') || text.match?(/\s/)
        raise ConfigError, "#{name} #{value.inspect} is not a tag: write dot-separated words, e.g. classified"
      end

      text
    end
  end
end
