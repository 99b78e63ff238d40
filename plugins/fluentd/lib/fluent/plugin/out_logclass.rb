# frozen_string_literal: true

require 'fluent/plugin/output'
require 'fluent/event'
require 'fluent/event_router'
require 'fluent/error'
require_relative 'logclass_common'

module Fluent
  module Plugin
    # Fluentd output `logclass`: the step that waits. Records go into Fluentd's buffer (a file by
    # default, so they survive a restart while they wait). Each chunk is classified with a long
    # budget (wait_for_all, at most hold_timeout for the whole chunk), so that records of
    # templates the sidecar has not seen get their real label instead of tier `pending`, then
    # re-emitted under a new tag (tag, or add_tag_prefix / remove_tag_prefix) for another
    # <match> to store.
    #
    # `write` is synchronous: Fluentd commits the chunk only when it returns, i.e. after the
    # re-emit, and retries the chunk when the re-emit raises. Delivery is at-least-once.
    # A sidecar that is down or too slow does not raise: the records are re-emitted with the
    # fallback label, as the filter passes them (the same Logclass::Labeller does both).
    class LogclassOutput < Output
      Fluent::Plugin.register_output('logclass', self)

      include LogclassCommon
      helpers :event_emitter

      # The re-emitted records came back to this output: its own <match> catches the new tag.
      # Unrecoverable, so Fluentd moves the chunk to its backup directory (it is not lost) instead
      # of retrying it forever.
      class TagLoop < Fluent::UnrecoverableError; end

      REEMITTING = :logclass_output_reemitting

      desc 'The longest a chunk waits for model answers about its new templates (ClassifyRequest.wait_for_all); ' \
           'records still undecided then leave with tier pending. Also the deadline of its first Classify call.'
      config_param :hold_timeout, :time, default: 30
      desc 'The tag the labelled records are re-emitted under, one for all. Or use add_tag_prefix / remove_tag_prefix.'
      config_param :tag, :string, default: nil
      desc 'Re-emit under the chunk\'s tag with this prefix, e.g. classified: app.web becomes classified.app.web.'
      config_param :add_tag_prefix, :string, default: nil
      desc 'Re-emit under the chunk\'s tag without this leading part (before add_tag_prefix is added).'
      config_param :remove_tag_prefix, :string, default: nil

      config_section :buffer do
        # A file, so records survive a restart while they wait (it needs a path, or root_dir and @id).
        config_set_default :@type, 'file'
        # The chunk's tag is the records' source and the base of their new tag.
        config_set_default :chunk_keys, ['tag']
        config_set_default :flush_mode, :interval
        config_set_default :flush_interval, 1
        # One Classify call per chunk at the default max_batch_records.
        config_set_default :chunk_limit_records, 1000
        # A chunk held for new templates does not hold back the chunks behind it.
        config_set_default :flush_thread_count, 4
        # Only a failed re-emit raises (e.g. the next output's buffer is full): keep the chunk
        # until it goes, instead of dropping it after retry_timeout.
        config_set_default :retry_forever, true
        config_set_default :retry_max_interval, 30
      end

      attr_reader :rewriter

      def initialize
        super
        @writes = 0
        @writes_mutex = Mutex.new
        @writes_done = ConditionVariable.new
      end

      def configure(conf)
        begin
          super
        rescue Fluent::ConfigError => e
          raise unless e.message.include?('buffer path is not configured')

          raise Fluent::ConfigError, "logclass: #{e.message}: this output buffers in files by default, so records " \
                                     'survive a restart while they wait; set path in <buffer> (or root_dir and @id), ' \
                                     'or <buffer> @type memory </buffer> to keep them in memory'
        end
        unless @chunk_key_tag
          raise Fluent::ConfigError, 'logclass: <buffer> needs tag among its chunk keys (<buffer tag> or ' \
                                     "<buffer tag,time>): a chunk's tag is its records' source and the base of their new tag"
        end
        unless @hold_timeout >= @timeout
          raise Fluent::ConfigError, "logclass: hold_timeout #{@hold_timeout}s is below timeout #{@timeout}s: " \
                                     "a held call's deadline is never shorter than timeout, so the hold could not end " \
                                     'sooner; raise hold_timeout or lower timeout'
        end
        @rewriter = Logclass::TagRewriter.new(tag: @tag, add_prefix: @add_tag_prefix, remove_prefix: @remove_tag_prefix)
        refuse_tag_loop(conf)
        # A chunk held for new templates is the point of this output, not a slow flush.
        @slow_flush_log_threshold = @hold_timeout + @timeout + 5.0 unless conf.key?('slow_flush_log_threshold')
      rescue Logclass::ConfigError => e
        raise Fluent::ConfigError, "logclass: #{e.message}"
      end

      def start
        super
        @reemit_router = router
      end

      def write(chunk)
        return if chunk.empty?

        writing do
          tag = chunk.metadata.tag
          times = []
          records = []
          chunk.each do |time, record|
            times << time
            records << record
          end
          reemit(@rewriter.call(tag), MultiEventStream.new(times, @labeller.label(tag, records)))
        end
      end

      # Fluentd shuts this output down (and flushes a memory buffer) before the outputs it emits
      # into, but does not wait for a write in progress, which may be holding a chunk for up to
      # hold_timeout: waited for here, so its records reach outputs that still take them.
      def before_shutdown
        super
        deadline = Fluent::Clock.now + @hold_timeout + @timeout + 5
        @writes_mutex.synchronize do
          while @writes.positive? && (left = deadline - Fluent::Clock.now).positive?
            @writes_done.wait(@writes_mutex, left)
          end
          log.warn "logclass: shutting down with #{@writes} chunks still being written" if @writes.positive?
        end
      end

      # Fluentd routes an emit synchronously into the matching output's buffer, so re-emitted
      # records that come back here arrive on the thread that is re-emitting them.
      def emit_buffered(tag, es)
        if Thread.current[REEMITTING].equal?(self)
          raise TagLoop, "logclass: records re-emitted under tag #{tag} came back to this output: its own <match> " \
                         'catches the new tag, an endless loop. Route the new tag to a <match> placed before this one, ' \
                         'or change tag/add_tag_prefix. Fluentd sets the chunk aside in its backup directory instead.'
        end

        super
      end

      # For each pattern of this output's <match>, one tag it catches (wildcards filled in with x):
      # the configure-time loop check rewrites each and sees whether the <match> catches that too.
      def self.example_tags(pattern)
        pattern.split(/\s+/).reject { |part| part.empty? || part.start_with?('/') }.map do |part|
          tag = part.gsub(/\{([^,}]*)[^}]*\}/) { Regexp.last_match(1) }.gsub('**', 'x').tr('*', 'x').delete('\\')
          tag = tag.squeeze('.').delete_prefix('.').delete_suffix('.')
          tag.empty? ? 'x' : tag
        end
      end

      private

      def logclass_hold
        @hold_timeout
      end

      def writing
        @writes_mutex.synchronize { @writes += 1 }
        yield
      ensure
        @writes_mutex.synchronize do
          @writes -= 1
          @writes_done.broadcast
        end
      end

      def reemit(tag, stream)
        previous = Thread.current[REEMITTING]
        Thread.current[REEMITTING] = self
        # `router` names this plugin as the emitter (Fluentd's per-plugin emit metrics); Fluentd
        # clears it at after_shutdown, when a write that outlived before_shutdown may still emit.
        (router || @reemit_router).emit_stream(tag, stream)
      ensure
        Thread.current[REEMITTING] = previous
      end

      # Refuses the configurations whose loop is certain: the rewritten tag of a tag this <match>
      # catches is caught by it again, with no earlier <match> taking it first. Only possible for a
      # real <match> section (conf.arg is its pattern) emitting into its own router.
      def refuse_tag_loop(conf)
        return unless conf.name == 'match' && conf['@label'].nil?

        pattern = conf.arg.to_s.strip.empty? ? '**' : conf.arg.to_s.strip
        own = Fluent::EventRouter::Rule.new(pattern, nil)
        earlier = router
        self.class.example_tags(pattern).each do |example|
          next unless own.match?(example)

          rewritten = @rewriter.call(example)
          next unless own.match?(rewritten)
          next if earlier.respond_to?(:match?) && earlier.match?(rewritten)

          raise Fluent::ConfigError, "logclass: <match #{pattern}> would catch its own records again: #{example} is " \
                                     "re-emitted as #{rewritten}, which it matches, an endless loop. Use add_tag_prefix " \
                                     "(e.g. classified) with a narrower <match>, or put a <match> for #{rewritten} before this one"
        end
      end
    end
  end
end
