# frozen_string_literal: true

require_relative 'helper'
require 'tmpdir'

# The checked-in stubs are what bin/generate-stubs makes from proto/ today.
class StubsFreshTest < Test::Unit::TestCase
  PLUGIN = File.expand_path('..', __dir__)

  test 'lib/logclass/api matches a fresh generation from proto/logclass/v1/classifier.proto' do
    Dir.mktmpdir do |dir|
      output = IO.popen([File.join(PLUGIN, 'bin', 'generate-stubs'), dir], err: %i[child out], &:read)
      assert_true $?.success?, "bin/generate-stubs failed:\n#{output}"
      %w[classifier_pb.rb classifier_services_pb.rb].each do |name|
        committed = File.join(PLUGIN, 'lib', 'logclass', 'api', name)
        assert_equal File.read(File.join(dir, name)), File.read(committed),
                     "#{committed} is stale (or made by another protoc, see its header): run `make ruby-stubs`"
      end
    end
  end

  test 'the stubs cover every RPC and message of the proto' do
    proto = File.read(File.join(LogclassTest::ROOT, 'proto', 'logclass', 'v1', 'classifier.proto'))
    rpcs = proto.scan(/^\s*rpc (\w+)\(/).flatten
    assert_equal %w[Classify ClassifyStream GetModelInfo], rpcs
    assert_equal rpcs, Logclass::V1::LogClassifier::Service.rpc_descs.keys.map(&:to_s)
    proto.scan(/^message (\w+)/).flatten.each { |name| assert_true Logclass::V1.const_defined?(name), name }
  end
end
