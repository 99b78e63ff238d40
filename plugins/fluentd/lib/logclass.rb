# frozen_string_literal: true

# logclass client core: classifies log records through the logclass sidecar (gRPC), failing open.
# Plain Ruby; Fluentd is only needed for fluent/plugin/filter_logclass.rb and out_logclass.rb.
require_relative 'logclass/version'
require_relative 'logclass/errors'
require_relative 'logclass/outcome'
require_relative 'logclass/credentials'
require_relative 'logclass/client'
require_relative 'logclass/batcher'
require_relative 'logclass/circuit_breaker'
require_relative 'logclass/rate_limited_warning'
require_relative 'logclass/stats'
require_relative 'logclass/record_tagger'
require_relative 'logclass/classifier'
require_relative 'logclass/record_reader'
require_relative 'logclass/labeller'
require_relative 'logclass/tag_rewriter'
