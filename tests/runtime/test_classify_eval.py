"""`classify --eval` on an ImageFolder with a known answer: the figures are those of the per-image
predictions of `classify --json` on the same folder, counted by hand here."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_bundle):
    """The sample's test images, 4 of each class, in FOLDER/<class>/ (class names as file names)."""
    from conftest import run_cli

    folder = tmp_path_factory.mktemp("labelled") / "try"
    proc = run_cli("data", "sample-images", folder, "--per-class", "4")
    assert proc.returncode == 0, proc.stderr
    return folder


def test_eval_matches_the_per_image_predictions(run_cli, tiny_bundle, labelled, tmp_path):
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.files import slug

    b = Bundle.open(str(tiny_bundle))
    classes = sorted(c for s in b.superclasses for c in s.subclasses)  # the report lists them by name
    assert classes != [c for s in b.superclasses for c in s.subclasses]  # (not in the hierarchy's order)
    ref = run_cli("classify", tiny_bundle, labelled, "--json")
    assert ref.returncode == 0, ref.stderr
    rows = [json.loads(line) for line in ref.stdout.splitlines()]
    truth = [
        next(c for c in classes if slug(c) == os.path.relpath(r["image"], labelled).split(os.sep)[0]) for r in rows
    ]
    sup_of = {c: s.name for s in b.superclasses for c in s.subclasses}
    right = sum(r["class"] == t for r, t in zip(rows, truth))
    super_right = sum(r["superclass"] == sup_of[t] for r, t in zip(rows, truth))

    plot = tmp_path / "confusion.png"
    proc = run_cli("classify", tiny_bundle, labelled, "--eval", "--json", "--plot", plot)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail("non-strict JSON " + c))
    assert r["images"] == 40 and r["classes"] == classes
    assert r["accuracy"] == right / 40 and r["superclass_accuracy"] == super_right / 40
    conf = np.array(r["confusion"])
    assert conf.sum() == 40 and (conf.sum(axis=1) == 4).all() and np.trace(conf) == right
    for row, c in zip(r["per_class"], classes):
        mine = [x for x, t in zip(rows, truth) if t == c]
        assert row["images"] == 4 and row["correct"] == sum(x["class"] == c for x in mine)
        assert row["superclass"] == sup_of[c]
    from PIL import Image

    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200

    text = run_cli("classify", tiny_bundle, labelled, "--eval")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "accuracy             {:.2f}% ({}/40 images)".format(100 * right / 40, right)
    assert lines[1] == "superclass accuracy  {:.2f}%".format(100 * super_right / 40)
    assert [ln.split()[0] for ln in lines[4:14]] == [c.split()[0] for c in classes]  # the per-class table by name
    at = lines.index("confusion matrix (rows: true class, columns: predicted class)")
    assert lines[at + 1].split() == " ".join(classes).split()  # the columns headed by the class names
    for c, row, line in zip(classes, conf, lines[at + 2 :]):  # each row starts with its class name, no number
        assert line.startswith(c + " ") and line[len(c) :].split() == [str(v) for v in row]
    assert len(lines) == at + 2 + 10


def test_the_text_matrix_names_its_classes_in_name_order():
    """Digit class names are not mistaken for row numbers: no numbering, classes by name (2 before 10);
    a matrix too wide for the text lists the most frequent confusions instead."""
    from edgetool.runtime import folder_eval as E

    assert sorted(["10", "2", "1", "b", "A", "a2", "a10"], key=E.name_order) == ["1", "2", "10", "A", "a2", "a10", "b"]
    lines = E.matrix_lines(["1", "2", "10"], [[5, 1, 0], [0, 6, 0], [2, 0, 3]], 5)
    assert lines[1:] == [
        "         1    2   10",
        "1        5    1    0",
        "2        0    6    0",
        "10       2    0    3",
    ]
    wide = ["class name number {}".format(i) for i in range(8)]
    conf = [[9 if i == j else 0 for j in range(8)] for i in range(8)]
    conf[3][5], conf[0][1], conf[6][2] = 4, 2, 4
    lines = E.matrix_lines(wide, conf, 20)
    assert lines == [
        "most frequent confusions (3 of 3; the whole 8-class matrix is in --json and --plot)",
        "  4 images of class name number 3 predicted as class name number 5",
        "  4 images of class name number 6 predicted as class name number 2",
        "  2 images of class name number 0 predicted as class name number 1",
    ]


def test_eval_bad_input_is_one_error_line(run_cli, tiny_bundle, labelled, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "x.png").write_bytes((labelled / os.listdir(labelled)[0] / "000.png").read_bytes())
    odd = tmp_path / "odd"
    (odd / "Zebra").mkdir(parents=True)
    (odd / "Zebra" / "x.png").write_bytes((loose / "x.png").read_bytes())
    cases = [
        (["--eval", labelled, labelled], "--eval takes one labelled folder"),
        (["--eval", loose / "x.png"], "--eval takes one labelled folder"),
        (["--eval", loose], "not inside a class folder"),
        (["--eval", odd], "class folders 'Zebra' are no class of the bundle"),
        ([labelled, "--plot", tmp_path / "p.png"], "--plot draws the confusion matrix of --eval"),
        (["--eval", labelled, "--plot", tmp_path / "no" / "p.png"], "does not exist"),
    ]
    for args, message in cases:
        proc = run_cli("classify", tiny_bundle, *args)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "p.png").exists()


def test_a_class_folder_that_is_a_symbolic_link_is_read(run_cli, tiny_bundle, labelled, tmp_path):
    """A class folder linked in from elsewhere counts as any other (it used to be skipped silently)."""
    import shutil

    folder = tmp_path / "linked"
    shutil.copytree(str(labelled), str(folder))
    first = sorted(os.listdir(folder))[0]
    shutil.move(str(folder / first), str(tmp_path / "elsewhere"))
    os.symlink(str(tmp_path / "elsewhere"), str(folder / first))
    proc = run_cli("classify", tiny_bundle, folder, "--eval", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["images"] == 40 and all(row["images"] == 4 for row in r["per_class"]), r["per_class"]
    os.symlink(str(folder), str(tmp_path / "elsewhere" / "loop"))  # a link back up: a loop, one error line
    proc = run_cli("classify", tiny_bundle, folder, "--eval")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and "loop" in proc.stderr and proc.stderr.count("\n") == 1


def test_the_plot_on_a_full_disk_is_one_error_line(run_cli, tiny_bundle, labelled, small_disk):
    disk = small_disk(64)
    fd = os.open(str(disk / "filler"), os.O_WRONLY | os.O_CREAT)  # fill the disk
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    plot = disk / "confusion.png"
    proc = run_cli("classify", tiny_bundle, labelled, "--eval", "--plot", plot)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(plot) in errors[0], proc.stderr
    assert os.listdir(disk) == ["filler"]
