# frozen_string_literal: true

module Logclass
  # Labels a list of records (a filter's event stream, an output's buffer chunk): reads each one
  # (RecordReader), classifies them all (Classifier, which never loses a record), and writes the
  # outcomes into copies (RecordTagger). Plain Ruby: the Fluentd filter and output are thin
  # adapters around one of these.
  #
  # hold: nil for the filter (each call waits its budget, then new templates come back
  # `pending`); seconds for the output, which may hold a chunk that long for model answers.
  class Labeller
    attr_reader :classifier, :hold

    # logger: #error (Fluentd's plugin logger, Ruby's Logger).
    def initialize(classifier, reader:, tagger:, logger:, hold: nil)
      if hold && !(hold.is_a?(Numeric) && hold.positive?)
        raise ConfigError, "hold_timeout must be more than 0 seconds (got #{hold.inspect})"
      end

      @classifier = classifier
      @reader = reader
      @tagger = tagger
      @logger = logger
      @hold = hold
    end

    # The records, labelled, in their order, as many as came in.
    def label(tag, records)
      entries = records.map { |record| @reader.entry(tag, record) }
      outcomes = @classifier.classify(entries, hold: @hold)
      records.each_with_index.map { |record, i| @tagger.tag(record, outcomes[i]) }
    rescue StandardError => e
      # A bug here must not cost records: they go on as they came, unlabelled.
      @logger.error("logclass: passing #{Classifier.records(records.size)} on unclassified after an unexpected " \
                    "error (#{e.class}: #{e.message}); please report it")
      @logger.error("logclass: #{e.backtrace&.first(8)&.join(' | ')}")
      records
    end
  end
end
