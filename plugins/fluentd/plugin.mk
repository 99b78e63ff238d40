# Fluentd plugins (plugins/fluentd/: the logclass filter and output). Included from the top-level Makefile, after its
# variables (STAMP, BIN, APT_INSTALL): `include plugins/fluentd/plugin.mk`.
#
# make ruby-deps     Debian's Ruby, gRPC, grpc-tools, test-unit and Fluentd's runtime libraries,
#                    installed only when one is missing
# make ruby-stubs    regenerate lib/logclass/api/ from proto/ (a test fails when they are stale)
# make ruby-test     the plugins' Ruby tests alone, against real sidecars (pytest runs them too)
# make fluentd-gem   build fluent-plugin-logclass-<version>.gem into dist/
FLUENTD_PLUGIN := plugins/fluentd
# Fluentd's runtime libraries: only the adapter tests need them, with a Fluentd source tree
# (FLUENTD_LIB); Debian has no fluentd package for bookworm. See plugins/fluentd/README.md.
RUBY_PACKAGES  := ruby ruby-grpc ruby-grpc-tools ruby-test-unit \
	ruby-msgpack ruby-yajl ruby-cool.io ruby-serverengine ruby-http-parser.rb ruby-sigdump \
	ruby-tzinfo ruby-strptime ruby-webrick ruby-concurrent
# Every library the tests load; a failed require (or no grpc_tools_ruby_protoc) means install.
# (test/unit/version, not test/unit: requiring test/unit runs every test file it finds.)
RUBY_REQUIRES  := grpc grpc/health/v1/health_services_pb google/protobuf test/unit/version msgpack yajl cool.io \
	serverengine http/parser sigdump tzinfo strptime webrick concurrent

.PHONY: ruby-deps ruby-stubs ruby-test fluentd-gem

# No stamp file: the check costs a fraction of a second and, unlike a stamp, notices packages
# removed since.
ruby-deps:
	@if command -v ruby >/dev/null 2>&1 && command -v grpc_tools_ruby_protoc >/dev/null 2>&1 && \
	    ruby -e 'ARGV.each { |lib| require lib }' $(RUBY_REQUIRES) >/dev/null 2>&1; then \
	  echo "ruby-deps: Ruby $$(ruby -e 'print RUBY_VERSION'), grpc $$(ruby -e 'require "grpc"; print GRPC::VERSION') present"; \
	else \
	  echo "ruby-deps: installing $(RUBY_PACKAGES)"; \
	  $(APT_INSTALL) $(RUBY_PACKAGES); \
	fi

ruby-stubs: ruby-deps
	$(FLUENTD_PLUGIN)/bin/generate-stubs

ruby-test: $(STAMP) ruby-deps
	cd $(FLUENTD_PLUGIN) && SIDECAR_PYTHON=$(abspath $(BIN))/python ruby -Ilib -Itest test/run.rb

fluentd-gem: ruby-deps
	mkdir -p dist
	cd $(FLUENTD_PLUGIN) && gem build fluent-plugin-logclass.gemspec -o $(abspath dist)/fluent-plugin-logclass-$$(ruby -Ilib -e 'require "logclass/version"; print Logclass::VERSION').gem
