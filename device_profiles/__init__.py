"""Device profiles: one JSON data file per target device. Their loader is ``edgetool.runtime.device_profiles``."""
