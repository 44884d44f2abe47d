"""`cli serve`: an HTTP runtime for a model folder (FastAPI on uvicorn, imported only by that command).

``server.create_app`` builds the app; ``batching.MicroBatcher`` scores concurrent requests together on
the one thread that owns the model; ``schemas`` declares the request limits; ``metrics`` is /metrics.
"""
