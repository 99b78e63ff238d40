# frozen_string_literal: true

require 'grpc'
require 'grpc/health/v1/health_services_pb'
require 'socket'
require 'tmpdir'

# A real `logclass serve` on 127.0.0.1, for tests and the benchmark. It stays in this process's
# process group (signals go to its pid; it starts no children), so whoever runs the tests can kill
# the whole tree at once, e.g. pytest on a timeout.
# Python comes from SIDECAR_PYTHON (pytest passes its own interpreter) or the project's .venv;
# not LOGCLASS_PYTHON: the sidecar reads every LOGCLASS_* variable as a setting.
class Sidecar
  ROOT = File.expand_path('../../../..', __dir__)
  # No LLM tier (nothing to load), no metrics or HTTP port (server.http_listen defaults to
  # 127.0.0.1:8000, which two sidecars cannot share), no network for model files.
  BASE_ENV = {
    'LOGCLASS_LLM__BACKEND' => 'none',
    'LOGCLASS_SERVER__METRICS_LISTEN' => 'null',
    'LOGCLASS_SERVER__HTTP_LISTEN' => 'null',
    'HF_HUB_OFFLINE' => '1',
    'TRANSFORMERS_OFFLINE' => '1'
  }.freeze
  SERVING = :SERVING

  @running = []
  class << self
    attr_reader :running

    def python
      ENV.fetch('SIDECAR_PYTHON') { File.join(ROOT, '.venv', 'bin', 'python') }
    end

    def free_port
      TCPServer.open('127.0.0.1', 0) { |server| server.addr[1] }
    end

    # One sidecar for the whole test process (started on first use, stopped at exit).
    def shared
      @shared ||= new.start
    end

    # Stops every sidecar still running when the process exits. Registered at the first start,
    # not at load: test-unit runs the tests from its own at_exit handler, and handlers run in
    # reverse order, so one registered at load would run before the tests had started any.
    def stop_all_at_exit
      return if @stop_all_registered

      @stop_all_registered = true
      at_exit { Sidecar.running.dup.each(&:stop) }
    end
  end

  attr_reader :address, :port, :pid, :log_path

  # env: extra LOGCLASS_* settings. health_credentials: channel credentials for the readiness
  # check when the sidecar serves TLS.
  def initialize(port: Sidecar.free_port, env: {}, health_credentials: nil)
    @port = port
    @address = "127.0.0.1:#{port}"
    @env = env
    @health_credentials = health_credentials
    @log_path = File.join(Dir.tmpdir, "logclass-sidecar-#{port}-#{Process.pid}.log")
  end

  def start(timeout: 180)
    unless File.executable?(Sidecar.python)
      raise "no Python for the sidecar at #{Sidecar.python}: run `make install` (or set SIDECAR_PYTHON)"
    end

    @pid = Process.spawn(ENV.to_h.merge(BASE_ENV, @env), Sidecar.python, '-m', 'logclass.cli', 'serve',
                         '--listen', @address, chdir: ROOT, %i[out err] => [@log_path, 'w'])
    Sidecar.running << self
    Sidecar.stop_all_at_exit
    wait_serving(timeout)
    self
  end

  def alive?
    return false unless @pid

    Process.waitpid(@pid, Process::WNOHANG).nil?
  rescue Errno::ECHILD
    false
  end

  # SIGKILL: a crash, nothing drained.
  def kill
    signal('KILL')
    reap
  end

  # SIGTERM (drain), then SIGKILL after 30 s.
  def stop
    return reap unless alive?

    signal('TERM')
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
    sleep 0.1 while alive? && Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
    signal('KILL') if alive?
    reap
  end

  # SIGSTOP: the sidecar keeps its sockets (the kernel still accepts connections) but answers
  # nothing, like a hung process. resume sends SIGCONT.
  def pause
    signal('STOP')
  end

  def resume
    signal('CONT')
  end

  def log
    File.exist?(@log_path) ? File.read(@log_path) : ''
  end

  private

  def signal(name)
    Process.kill(name, @pid)
  rescue Errno::ESRCH
    nil
  end

  # Waits for the exited process; its log goes too (KEEP_SIDECAR_LOGS=1 keeps it).
  def reap
    Process.wait(@pid) if @pid
  rescue Errno::ECHILD
    nil
  ensure
    Sidecar.running.delete(self)
    File.delete(@log_path) if File.exist?(@log_path) && !ENV['KEEP_SIDECAR_LOGS']
  end

  def wait_serving(timeout)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    request = Grpc::Health::V1::HealthCheckRequest.new(service: 'logclass.v1.LogClassifier')
    creds = @health_credentials || :this_channel_is_insecure
    stub = Grpc::Health::V1::Health::Stub.new(@address, creds)
    while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      raise "the sidecar exited before it was SERVING:\n#{log}" unless alive?

      begin
        return if stub.check(request, deadline: Time.now + 2).status == SERVING
      rescue GRPC::BadStatus
        nil # not listening yet, or NOT_SERVING while the models load
      end
      sleep 0.2
    end
    raise "the sidecar at #{@address} was not SERVING after #{timeout}s:\n#{log}"
  end
end
