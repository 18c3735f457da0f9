"""Time the subclass switch: decode a delta and add it to the resident base weights in place.

    python examples/time_switch.py BUNDLE [REPEATS]

Each switch goes from the base network to one subclass network and back; the median of
REPEATS switches per subclass network is printed, in milliseconds, with the delta's stored size.
``edgetool profile`` reports the same with every stage of a switch apart.
"""

import statistics
import sys
import time

from edgetool.runtime.backends import load_backend
from edgetool.runtime.backends.base import BASE
from edgetool.runtime.bundle.reader import Bundle


def main(bundle_dir: str, repeats: int = 20) -> None:
    bundle = Bundle.open(bundle_dir)
    with load_backend("onnxruntime", bundle) as backend:
        for k, (sup, delta) in enumerate(zip(bundle.superclasses, bundle.model.deltas)):
            times = []
            for _ in range(repeats):
                backend.switch(BASE)
                t0 = time.perf_counter()
                backend.switch(k)
                times.append((time.perf_counter() - t0) * 1e3)
            print("{}\t{:.3f} ms\t{} bytes ({})".format(sup.name, statistics.median(times), delta.size, delta.codec))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20)
