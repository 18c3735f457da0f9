"""A camera loop on the public API: read frames, classify them as ``edgetool camera`` does, print.

    python examples/camera_loop.py BUNDLE SOURCE [MAX_FRAMES]

SOURCE is what ``edgetool camera`` takes: csi://0, /dev/video0, rtsp://..., a video file or an
image folder.  The sticky policy keeps the routed subclass network loaded: a steady scene costs
one network run per frame, and the base network runs again (a switch) only when the subclass
network's confidence falls below ``leave``, or every ``interval`` frames.
"""

import sys

from edgetool.runtime.backends import load_backend
from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.camera.frames import swap_rb
from edgetool.runtime.camera.sources import END, LOST, OK, Options, open_source
from edgetool.runtime.camera.schedule import StreamClassifier
from edgetool.runtime.preprocess import prepare


def main(bundle_dir: str, uri: str, max_frames: int = 0) -> None:
    bundle = Bundle.open(bundle_dir)
    source = open_source(uri, Options())
    source.open()
    frames = 0
    with load_backend("onnxruntime", bundle) as backend:
        clf = StreamClassifier(backend, policy="sticky", enter=0.6, leave=0.4, interval=30)
        try:
            while not max_frames or frames < max_frames:
                status, frame = source.read()  # BGR, as OpenCV delivers it
                if status in (END, LOST):
                    break
                if status != OK or frame is None:  # a corrupt frame: skip it
                    continue
                x = prepare([swap_rb(frame)], bundle.input)  # RGB, then classify's own preprocessing
                pred = clf.classify_stream(x, [False])[0]  # [True]: a scene cut before this frame
                frames += 1
                print(
                    "frame {}\t{}\t{:.3f}\tswitches {}".format(
                        frames, pred.label, pred.confidence, backend.switch_count
                    )
                )
        finally:
            source.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
