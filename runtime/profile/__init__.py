"""``edgetool profile``: trtexec-style latency, throughput and memory reports of a bundle.

* :mod:`.stats`   - timing loops (warm-up, then N iterations) and their statistics;
* :mod:`.system`  - the machine: CPU, memory (RSS, GPU), Jetson tegrastats/nvpmodel figures;
* :mod:`.stages`  - the switch broken into stages, inference, end-to-end per policy and mode;
* :mod:`.engines` - backends in one-engine and two-engine mode;
* :mod:`.vanilla` - the comparison points: the single base network and vanilla's N+1 sessions;
* :mod:`.memprobe` - resident memory of single / efficient / vanilla, each in a fresh process;
* :mod:`.schema`  - the report's shape, checked;
* :mod:`.project` - estimates for other device profiles from the measured figures;
* :mod:`.report`  - JSON, Markdown and a self-contained HTML page (:mod:`.plots`, :mod:`.svg`).

Imports no torch and runs on Python 3.8, like the rest of the device side.
"""
