# frozen_string_literal: true

require_relative 'helper'
require_relative 'support/certificates'
require 'tmpdir'

# TLS with client certificates (mTLS) and a bearer token, against a sidecar that requires both.
class SecureSidecarTest < Test::Unit::TestCase
  TOKEN = 's3cret-token-for-ruby-tests'

  class << self
    attr_reader :sidecar, :dir

    def startup
      @dir = Certificates.write(Dir.mktmpdir('logclass-certs'))
      File.write(path('token'), "#{TOKEN}\n")
      health = GRPC::Core::ChannelCredentials.new(File.read(path('ca.pem')), File.read(path('client.key')),
                                                  File.read(path('client.pem')))
      @sidecar = Sidecar.new(env: {
                               'LOGCLASS_SERVER__TLS__CERT_FILE' => path('server.pem'),
                               'LOGCLASS_SERVER__TLS__KEY_FILE' => path('server.key'),
                               'LOGCLASS_SERVER__TLS__CLIENT_CA_FILE' => path('ca.pem'),
                               'LOGCLASS_SERVER__AUTH__TOKEN_FILE' => path('token')
                             }, health_credentials: health).start
    end

    def shutdown
      @sidecar&.stop
      FileUtils.rm_rf(@dir) if @dir
    end

    def path(name)
      File.join(@dir, name)
    end
  end

  def classify(ca: 'ca.pem', client_cert: true, token: TOKEN, token_path: nil, server_name: nil)
    credentials = Logclass::Credentials.tls(
      tls_ca_path: self.class.path(ca),
      tls_client_cert_path: client_cert ? self.class.path('client.pem') : nil,
      tls_client_key_path: client_cert ? self.class.path('client.key') : nil
    )
    bearer = Logclass::Credentials.bearer_token(bearer_token: token, bearer_token_path: token_path)
    client = Logclass::Client.new(self.class.sidecar.address, timeout: 10, credentials: credentials,
                                                               bearer_token: bearer, tls_server_name: server_name)
    logger, @log = LogclassTest.logger
    classifier = Logclass::Classifier.new(client, logger: logger)
    classifier.classify([['BillingSystem', 'User 12345 logged in.']]).first
  ensure
    classifier&.close
  end

  test 'mTLS and the right token: classified' do
    outcome = classify
    assert_equal ['User Action', nil], [outcome.label, outcome.fallback_reason]
  end

  test 'the token from a file, and the certificate checked against another name' do
    outcome = classify(token: nil, token_path: self.class.path('token'), server_name: 'localhost')
    assert_equal 'User Action', outcome.label
  end

  test 'a wrong or missing token falls back as unauthenticated, and the token is never logged' do
    ['wrong-token', nil].each do |token|
      outcome = classify(token: token)
      assert_equal %w[Unclassified unauthenticated], [outcome.label, outcome.fallback_reason]
      assert_match(/set bearer_token or bearer_token_path/, @log.string)
      assert_not_include @log.string, TOKEN
      assert_not_include(@log.string, token) if token
    end
  end

  test 'no client certificate, or a CA that did not sign the server: the handshake fails, records fall back' do
    assert_equal 'unavailable', classify(client_cert: false).fallback_reason
    assert_equal 'unavailable', classify(ca: 'other-ca.pem').fallback_reason
  end
end
