"""edgetool: two-stage Super-Sub classifiers from the workstation to NVIDIA Jetson."""

__version__ = "0.1.0"
