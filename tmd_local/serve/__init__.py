"""`tmd serve`: a local HTTP server (OpenAI-compatible chat completions and tmd's own API) over a
bundle or the embedded model. See app.py for the endpoints and engine.py for queueing and batching."""
