# frozen_string_literal: true

# Shared by every test file: the plugin's lib on the load path, test-unit, the sidecar helper and
# the seed rows with the labels the shipped model gives them.
$LOAD_PATH.unshift(File.expand_path('../lib', __dir__))
require 'csv'
require 'logger'
require 'stringio'
require 'test/unit'
require 'logclass'
require_relative 'support/sidecar'

module LogclassTest
  ROOT = Sidecar::ROOT
  SEED_TEST_CSV = File.join(ROOT, 'training', 'data', 'seed_test.csv')
  # training/data/seed_test.csv as the shipped model (default bundle, no LLM tier) labels it.
  # LegacyCRM is routed to the LLM tier, absent here, so the sidecar answers its fallback.
  SEED_TEST_LABELS = [
    'Security Alert', 'User Action', 'System Notification', 'System Notification', 'HTTP Status',
    'Security Alert', 'Unclassified', 'Unclassified', 'Unclassified', 'Unclassified'
  ].freeze

  # [[source, message, label], ...] for the seed test rows.
  def self.seed_rows
    rows = CSV.read(SEED_TEST_CSV, headers: true, strip: true)
    raise "#{SEED_TEST_CSV} has #{rows.size} rows; SEED_TEST_LABELS has #{SEED_TEST_LABELS.size}" unless rows.size == SEED_TEST_LABELS.size

    rows.each_with_index.map { |row, i| [row['source'], row['log_message'], SEED_TEST_LABELS[i]].freeze }.freeze
  end

  # A real Logger writing into a StringIO, to read what the plugin logged.
  def self.logger
    io = StringIO.new
    logger = Logger.new(io)
    logger.formatter = proc { |severity, _time, _prog, msg| "#{severity} #{msg}\n" }
    [logger, io]
  end

  # Letters outside a-f: words of them are never masked (as hex or numbers), so each line below
  # is a template of its own.
  WORD_LETTERS = ('g'..'z').to_a.freeze

  def self.word(number)
    digits = number.digits(WORD_LETTERS.size)
    digits.reverse.map { |d| WORD_LETTERS[d] }.join.rjust(4, WORD_LETTERS[0])
  end

  # A word this test process made up, so a sidecar that lives longer than it cannot know the
  # templates below from an earlier run.
  def self.salt
    @salt ||= Array.new(6) { WORD_LETTERS.sample }.join.freeze
  end

  # `count` messages the sidecar has never seen, each a new template: "novel event ghjk in module ...".
  def self.novel_messages(count, start: 0)
    Array.new(count) { |i| "novel event #{word(start + i)} in module #{salt}" }
  end

  def self.monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end
