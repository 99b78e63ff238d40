# frozen_string_literal: true

require 'grpc'
require_relative 'errors'

module Logclass
  # How the plugin proves itself to the sidecar and checks the sidecar: TLS (optionally mutual) and
  # a bearer token. Errors name the plugin setting to fix.
  module Credentials
    # TLS channel credentials, or nil for a plaintext channel (loopback or a unix socket: the
    # sidecar's default). `tls` alone uses the system's CA roots; a client cert needs its key.
    def self.tls(tls: false, tls_ca_path: nil, tls_client_cert_path: nil, tls_client_key_path: nil)
      unless tls || tls_ca_path || tls_client_cert_path || tls_client_key_path
        return nil
      end
      if tls_client_cert_path.nil? != tls_client_key_path.nil?
        raise ConfigError, 'set both tls_client_cert_path and tls_client_key_path (mutual TLS needs the certificate and its key), or neither'
      end

      ca = tls_ca_path && read(tls_ca_path, 'tls_ca_path')
      if tls_client_cert_path
        GRPC::Core::ChannelCredentials.new(ca, read(tls_client_key_path, 'tls_client_key_path'),
                                           read(tls_client_cert_path, 'tls_client_cert_path'))
      else
        ca ? GRPC::Core::ChannelCredentials.new(ca) : GRPC::Core::ChannelCredentials.new
      end
    end

    # The bearer token to send as `authorization: Bearer <token>`, from the setting or a file
    # (a mounted Secret), or nil. Never logged.
    def self.bearer_token(bearer_token: nil, bearer_token_path: nil)
      if bearer_token && bearer_token_path
        raise ConfigError, 'set bearer_token or bearer_token_path, not both'
      end
      return bearer_token.empty? ? nil : bearer_token if bearer_token

      return nil unless bearer_token_path

      token = read(bearer_token_path, 'bearer_token_path').strip
      raise ConfigError, "bearer_token_path #{bearer_token_path} is empty: put the sidecar's token in it" if token.empty?

      token
    end

    def self.read(path, setting)
      File.read(path)
    rescue SystemCallError => e
      raise ConfigError, "cannot read #{setting} #{path}: #{e.message}"
    end
    private_class_method :read
  end
end
