"""Device side of edgetool: bundle reader, delta codecs, backends, two-stage classifier.

This package imports neither torch nor anything from ``edgetool.toolchain`` or
``edgetool.export`` and stays importable on Python 3.8 (JetPack 5).
"""
