# frozen_string_literal: true

require 'json'
require 'logger'
require 'webrick'
require_relative 'sidecar'

# An OpenAI-compatible LLM server on 127.0.0.1 (POST /v1/chat/completions), slow on purpose: it
# answers every question after `delay` seconds (`slow_delay` for a question holding `slow_word`),
# choosing `answer` when the sidecar offers it (the request's structured_outputs choice), else
# the first label offered. A model the sidecar must wait for, as it would for a real LLM: a
# call's inline budget ends first, a held call gets the answer.
class LlmStub
  attr_reader :url, :answer

  def initialize(answer:, delay:, slow_word: nil, slow_delay: nil)
    @answer = answer
    @delay = delay
    @slow_word = slow_word
    @slow_delay = slow_delay
    @questions = []
    @mutex = Mutex.new
    @server = WEBrick::HTTPServer.new(BindAddress: '127.0.0.1', Port: 0, Logger: WEBrick::Log.new(File::NULL),
                                      AccessLog: [])
    @server.mount_proc('/v1/chat/completions') { |request, response| complete(request, response) }
    @url = "http://127.0.0.1:#{@server.config[:Port]}/v1"
    @thread = Thread.new { @server.start }
  end

  # The questions asked so far (the last message of each request).
  def questions
    @mutex.synchronize { @questions.dup }
  end

  def stop
    @server.shutdown
    @thread.join(10)
  end

  private

  def complete(request, response)
    body = JSON.parse(request.body)
    question = body.fetch('messages').last.fetch('content').to_s
    @mutex.synchronize { @questions << question }
    sleep(@slow_word && question.include?(@slow_word) ? @slow_delay : @delay)
    choices = body.dig('structured_outputs', 'choice') || []
    content = choices.include?(@answer) ? @answer : choices.first
    response.status = 200
    response['Content-Type'] = 'application/json'
    response.body = JSON.generate({ 'choices' => [{ 'message' => { 'role' => 'assistant', 'content' => content } }] })
  end
end

# A sidecar whose LLM tier is an LlmStub: the seed bundle routes source LegacyCRM straight to the
# LLM, so a new LegacyCRM template waits for the stub's answer. One per test process.
module LlmSidecar
  ANSWER = 'Security Alert'
  DELAY = 1.0
  # Questions with this word take longer than the output tests' short holds.
  SLOW_WORD = 'glacial'
  SLOW_DELAY = 6.0

  class << self
    def shared
      @shared ||= begin
        @llm = LlmStub.new(answer: ANSWER, delay: DELAY, slow_word: SLOW_WORD, slow_delay: SLOW_DELAY)
        at_exit { @llm.stop }
        Sidecar.new(env: { 'LOGCLASS_LLM__BACKEND' => 'vllm', 'LOGCLASS_LLM__SERVER__URL' => @llm.url,
                           'LOGCLASS_LLM__SERVER__MODEL' => 'stub', 'LOGCLASS_LLM__SERVER__RETRIES' => '0' }).start
      end
    end

    def llm
      shared
      @llm
    end
  end
end
