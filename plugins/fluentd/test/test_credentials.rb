# frozen_string_literal: true

require_relative 'helper'
require 'tmpdir'

class CredentialsTest < Test::Unit::TestCase
  test 'no TLS setting means a plaintext channel' do
    assert_nil Logclass::Credentials.tls
  end

  test 'a client certificate without its key (or the reverse) is refused with the fix' do
    assert_raise_message(/set both tls_client_cert_path and tls_client_key_path/) do
      Logclass::Credentials.tls(tls_client_cert_path: '/x.pem')
    end
  end

  test 'an unreadable file names the setting' do
    assert_raise_message(%r{cannot read tls_ca_path /nonexistent/ca.pem}) do
      Logclass::Credentials.tls(tls_ca_path: '/nonexistent/ca.pem')
    end
  end

  test 'the bearer token comes from the setting or a file, not both, and never empty' do
    assert_equal 'abc', Logclass::Credentials.bearer_token(bearer_token: 'abc')
    assert_nil Logclass::Credentials.bearer_token
    Dir.mktmpdir do |dir|
      path = File.join(dir, 'token')
      File.write(path, "s3cret\n")
      assert_equal 's3cret', Logclass::Credentials.bearer_token(bearer_token_path: path)
      assert_raise_message(/not both/) { Logclass::Credentials.bearer_token(bearer_token: 'a', bearer_token_path: path) }
      File.write(path, "\n")
      assert_raise_message(/is empty/) { Logclass::Credentials.bearer_token(bearer_token_path: path) }
    end
  end

  test 'endpoints: host:port, unix sockets; a missing port is refused with an example' do
    assert_equal '127.0.0.1:50051', Logclass::Client.target_for('127.0.0.1:50051')
    assert_equal 'unix:/run/logclass.sock', Logclass::Client.target_for('/run/logclass.sock')
    assert_equal 'unix:/run/logclass.sock', Logclass::Client.target_for('unix:/run/logclass.sock')
    assert_raise_message(/has no port: write host:port/) { Logclass::Client.target_for('localhost') }
    assert_raise_message(/endpoint is empty/) { Logclass::Client.target_for(' ') }
  end
end
