"""Self-hosted background removal on native RMBG-2.0, BiRefNet and RMBG-1.4 networks.

    from bgremover import Remover
    cutout = Remover.load("BiRefNet").remove("photo.jpg")

`import bgremover` stays light (no PyTorch): `Remover` is imported on first use, so the CLI's
`--help` and Ray's decode workers, which import the package, never load the network stack.
"""

from .version import __version__

__all__ = ["Remover", "__version__"]


def __getattr__(name: str):
    """`bgremover.Remover`, imported when first asked for (PEP 562)."""
    if name == "Remover":
        from .pipeline import Remover

        return Remover
    raise AttributeError(f"module 'bgremover' has no attribute {name!r}")
