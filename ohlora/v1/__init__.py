"""Generated gRPC stubs for package ohlora.v1 (see proto/)."""
