"""The HTTP front end (FastAPI): the REST API beside gRPC, and the web console."""
