"""The on-device classification loop: sources, stream scheduling, outputs (``edgetool camera``).

OpenCV is imported only when a loop runs (``pip install 'edgetool[camera]'``, or JetPack's
own OpenCV with GStreamer on a Jetson).
"""
