# frozen_string_literal: true

module Logclass
  # The gem's version (fluent-plugin-logclass); the sidecar has its own (ModelInfo.server_version).
  VERSION = '0.1.0'
end
