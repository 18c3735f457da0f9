"""The help of every training flag (`edgetool train --help`, `edgetool demo --help`), one table."""

# What --help shows for the flags whose TrainConfig default is None or needs words.
SHOWN = {
    "hierarchy": "DATA/hierarchy.json; the sample and CIFAR archives bring their own",
    "config": "none",
    "image_size": "32; an EfficientNet-Lite's own (224, 240, 260)",
    "pretrained": "none",
    "channels": "0: detect (1 when every image is grayscale)",
    "augment": "auto: flip for the shipped sample and CIFAR, none for other data",
}


TRAIN_HELP = {  # the help of each training flag
    "--data": "'sample' (shipped), an IDX folder, or an ImageFolder root with train/ and test/.",
    "--hierarchy": "Hierarchy JSON ('single': all classes in one superclass, to learn one).",
    "--config": "JSON config file; flags override it.",
    "--image-size": "Resize ImageFolder images to this size (a pretrained backbone: the shorter side to size / 0.875, "
    "then a centre crop).",
    "--resize": "How images reach --image-size, in training (ImageFolder data) and on the device (the bundle's "
    "input.resize): squash, the whole image resized to the square, a photo's aspect ratio not kept (as "
    "jetson-inference does); shorter, the shorter side resized to the size, then the centre square (the edges "
    "cropped). A pretrained EfficientNet-Lite keeps its own (shorter, crop 0.875).",
    "--channels": "ImageFolder data: 1 (grayscale), 3 (RGB), or 0 (detect from the images).",
    "--augment": "Training augmentation: random horizontal flip, or none (a mirror changes digits and text).",
    "--pad": "Random-crop padding for augmentation (4 for CIFAR; 0 = no crop).",
    "--limit-train": "Use at most this many training images (0 = all).",
    "--limit-test": "Use at most this many test images (0 = all).",
    "--val-fraction": "Hold out this fraction of the training images as the validation split. Every choice is made on "
    "it: export's routing (gate and beta; a learned router from 2,000 images), --adaptive network "
    "selection, the better flat control of the verdict, and `edgetool hierarchy learn`'s clustering. "
    "0: no split (the runtime's default routing; the verdict then picks on test and says so).",
    "--seed": "Random seed.",
    "--arch": "Model: resnet8, resnet14, resnet20, resnet18-cifar, resnet18, resnet34, resnet50; or a pretrained edge "
    "backbone: efficientnet-lite0, efficientnet-lite1, efficientnet-lite2 (with --pretrained imagenet).",
    "--width-mult": "Channel width multiplier.",
    "--freeze": "A pretrained EfficientNet-Lite: freeze the network up to and including this part (stem, blocks.N, "
    "head), compute its output once per image (cached) and train only what follows. auto: every block but the last; "
    "none: train the whole network (slow on a CPU).",
    "--tail-lr": "Learning rate of a pretrained backbone's trainable tail (AdamW, cosine schedule).",
    "--pretrained-partial": "Load --pretrained weights even when they fill under 90% of the network's tensors.",
    "--batch": "Batch size.",
    "--epochs": "Epochs of the flat network (and of the superclass network with --base-init scratch).",
    "--lr": "Learning rate of the flat and superclass networks (AdamW, cosine schedule).",
    "--base-init": "Superclass (base) network: from the flat network's fine-label trunk, or from scratch (or "
    "--pretrained).",
    "--base-epochs": "Superclass epochs from the flat trunk.",
    "--specialists": "A pretrained backbone: group the classes into this many superclasses (k-means of the trained "
    "network's class features, or --hierarchy) and fine-tune the tail of each into a specialist over its classes "
    "(--ft-epochs, a tenth of --tail-lr). A specialist ships only if it beats the network on held-out validation "
    "images routed to its superclass (needs --val-fraction); 0: none.",
    "--ft-epochs": "Epochs of every subclass fine-tune: the vanilla fp32 networks (also the upper bound, given the "
    "true superclass) and the QAT int8 networks share one recipe.",
    "--ft-lr": "Learning rate of every subclass fine-tune.",
    "--ft-outliers": "Outlier exposure: every subclass fine-tune also sees this many images of other superclasses per "
    "own image, trained toward an unsure output, so gated top-k routing can recover routing errors.",
    "--ft-not-mine": "With --ft-outliers: those images train one more head row, 'not mine', instead of an unsure "
    "output; each route's p_sub then falls on images that are not its own (the bundle records the "
    "row).",
    "--qat-epochs": "QAT epochs of the superclass network.",
    "--qat-lr": "Learning rate of the superclass network's QAT (halved: it starts trained).",
    "--delta-budget": "Delta budget: proximal threshold tau toward the base (0 = dense; larger = fewer changed int8 "
    "codes), gridM (code moves rounded to multiples of M, e.g. grid8), a share of weights that may "
    "move (e.g. 30%), or 'patch' (only BatchNorm scale/bias and the head change).",
    "--qat-weight-grad": "QAT weight gradient beyond +-127 codes: none (clip) or straight through (ste).",
}
