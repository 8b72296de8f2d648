"""The package's version, on its own so that modules below the package's face can read it (the
OpenVINO engine keys its cache on it) without importing the face, which sits above them all."""

__version__ = "0.1.0"
