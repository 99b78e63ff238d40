# frozen_string_literal: true

# Runs every test file: ruby -Ilib -Itest test/run.rb [test-unit options, e.g. -v or -n /name/]
require_relative 'helper'
Dir[File.join(__dir__, 'test_*.rb')].sort.each { |file| require file }
