# frozen_string_literal: true

# The adapter tests run the plugins under Fluentd's own test drivers, and need a Fluentd source
# tree: FLUENTD_LIB=/path/to/fluentd/lib (see README "Developing"); without it they are reported
# as omitted, with the reason.
module FluentdTree
  LIB = ENV.fetch('FLUENTD_LIB', nil)
  REASON =
    if LIB.nil? || LIB.empty?
      'no Fluentd here: set FLUENTD_LIB=/path/to/fluentd/lib (a v1.16-1.18 source tree) to run the adapter tests'
    end

  if REASON.nil?
    unless File.file?(File.join(LIB, 'fluent', 'version.rb'))
      # Asked for and not there: an error, not a skip.
      raise "FLUENTD_LIB=#{LIB} is not a Fluentd lib folder (no fluent/version.rb in it)"
    end

    $LOAD_PATH.unshift(LIB)
    require 'fluent/test'
    require 'fluent/test/helpers'
    require 'fluent/test/driver/filter'
    require 'fluent/test/driver/output'
    require 'fluent/plugin/filter_logclass'
    require 'fluent/plugin/out_logclass'
  end
end
