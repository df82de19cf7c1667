"""siyu (私域): a self-hostable private-domain customer operations platform."""

__version__ = "0.1.0"
