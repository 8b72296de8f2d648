"""Self-hosted background removal on native RMBG-2.0, BiRefNet and RMBG-1.4 networks."""

__version__ = "0.1.0"
