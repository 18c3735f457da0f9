"""Classify every image in a folder with a bundle, on the CPU (ONNX Runtime).

    python examples/classify_folder.py BUNDLE FOLDER

Prints one line per image: the file, the predicted class, its superclass and the confidence,
then how many subclass networks ran per image.  ``edgetool classify`` does the same with more
options; this is the public API it stands on.
"""

import os
import sys

from edgetool.runtime.backends import load_backend
from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.classifier import SuperSubClassifier
from edgetool.runtime.preprocess import expand_images, load_images


def main(bundle_dir: str, folder: str) -> None:
    bundle = Bundle.open(bundle_dir)  # checks every file's sha256 against the manifest
    paths = expand_images([folder])  # sorted, sub-folders included, as `edgetool classify` reads it
    images = load_images(paths, bundle.input)
    with load_backend("onnxruntime", bundle) as backend:
        clf = SuperSubClassifier(backend, policy="batched")  # one switch per superclass per batch
        for path, pred in zip(paths, clf.classify(images)):
            print(
                "{}\t{}\t{}\t{:.3f}".format(
                    os.path.relpath(path, folder), pred.label, pred.superclass_name, pred.confidence
                )
            )
        print("subclass networks per image: {:.2f}".format(1 + clf.extra_passes_per_image))


if __name__ == "__main__":
    main(*sys.argv[1:3])
