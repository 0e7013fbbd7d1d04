"""Anthropic's Messages API (``POST /v1/messages``) on the OpenAI port: see ``app.py``."""
