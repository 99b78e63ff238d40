"""The LogClassifier contract on the engine, whatever carries it: proto messages in and out,
request limits, budgets, and failures as google.rpc codes. The gRPC and HTTP front ends are
thin adapters over it, so both answer alike."""
