"""The gRPC classification sidecar: service, cross-request batcher, process lifecycle."""
