"""The web console (中文 first): static pages that call the REST API with the operator's key."""
