# frozen_string_literal: true

require 'openssl'

# A throw-away CA with a server certificate for 127.0.0.1 and a client certificate, written as
# PEM files into `dir`: ca.pem, server.pem/.key, client.pem/.key (and other-ca.pem, a CA that
# signed nothing here, to see a wrong CA refused).
module Certificates
  def self.write(dir)
    ca_key, ca = authority('logclass test CA')
    File.write(File.join(dir, 'ca.pem'), ca.to_pem)
    File.write(File.join(dir, 'other-ca.pem'), authority('another CA').last.to_pem)
    { 'server' => server_extensions, 'client' => [['extendedKeyUsage', 'clientAuth', false]] }.each do |name, extensions|
      key = OpenSSL::PKey::RSA.new(2048)
      cert = certificate("/CN=#{name}", key.public_key, ca.subject, ca_key, extensions, ca: false)
      File.write(File.join(dir, "#{name}.key"), key.to_pem)
      File.write(File.join(dir, "#{name}.pem"), cert.to_pem)
    end
    dir
  end

  def self.server_extensions
    [['subjectAltName', 'IP:127.0.0.1,DNS:localhost', false], ['extendedKeyUsage', 'serverAuth', false]]
  end

  def self.authority(name)
    key = OpenSSL::PKey::RSA.new(2048)
    subject = OpenSSL::X509::Name.parse("/CN=#{name}")
    [key, certificate(subject, key.public_key, subject, key, [['keyUsage', 'keyCertSign, cRLSign', true]], ca: true)]
  end

  def self.certificate(subject, public_key, issuer, issuer_key, extensions, ca:)
    cert = OpenSSL::X509::Certificate.new
    cert.version = 2
    cert.serial = rand(1 << 62)
    cert.subject = subject.is_a?(String) ? OpenSSL::X509::Name.parse(subject) : subject
    cert.issuer = issuer
    cert.public_key = public_key
    cert.not_before = Time.now - 60
    cert.not_after = Time.now + 2 * 86_400
    factory = OpenSSL::X509::ExtensionFactory.new
    factory.subject_certificate = cert
    factory.issuer_certificate = cert if ca
    cert.add_extension(factory.create_extension('basicConstraints', ca ? 'CA:TRUE' : 'CA:FALSE', true))
    extensions.each { |name, value, critical| cert.add_extension(factory.create_extension(name, value, critical)) }
    cert.sign(issuer_key, OpenSSL::Digest.new('SHA256'))
    cert
  end
  private_class_method :server_extensions, :authority, :certificate
end
