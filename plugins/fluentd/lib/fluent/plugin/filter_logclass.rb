# frozen_string_literal: true

require 'fluent/plugin/filter'
require 'fluent/event'
require_relative 'logclass_common'

module Fluent
  module Plugin
    # Fluentd filter `logclass`: classifies each record through the logclass sidecar (one batched
    # Classify call per event stream, split by max_batch_records) and writes the label into it.
    # It never holds a stream longer than the call's budget: records of templates the sidecar has
    # not decided by then leave with tier `pending` (out_logclass.rb waits for them instead).
    #
    # A thin adapter: the parameters and the Logclass::Labeller they build are LogclassCommon's;
    # batching, merging, failing open and the circuit breaker are lib/logclass/'s, tested without
    # Fluentd.
    class LogclassFilter < Filter
      Fluent::Plugin.register_filter('logclass', self)

      include LogclassCommon

      def filter_stream(tag, es)
        times = []
        records = []
        es.each do |time, record|
          times << time
          records << record
        end
        MultiEventStream.new(times, @labeller.label(tag, records))
      rescue StandardError => e
        # The labeller keeps its own errors from costing records; this is for anything around it.
        log.error "logclass: passing #{es.size} records on unclassified after an unexpected error; please report it",
                  error: e
        log.error_backtrace(e.backtrace)
        es
      end
    end
  end
end
