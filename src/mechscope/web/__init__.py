"""The local web app (``mechscope serve``): feature browser, feature pages, prompt explorer, steering
playground, JSON API; and ``serve_llm``, an OpenAI-compatible chat-completions server for mechscope models."""
