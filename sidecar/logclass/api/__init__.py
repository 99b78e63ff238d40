"""Generated gRPC stubs for proto/logclass/v1 (``make proto`` regenerates them)."""
