"""Data: IDX files, hierarchies, CIFAR archives, and `edgetool data download` against a local HTTP server."""

import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading

import numpy as np
import pytest

from edgetool.runtime.errors import UsageError
from edgetool.toolchain.data import folders as D
from edgetool.toolchain.hierarchy import spec as H


def test_idx_roundtrip_and_errors(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("x.idx", "x.idx.gz"):
        D.write_idx(str(tmp_path / name), a)
        np.testing.assert_array_equal(D.read_idx(str(tmp_path / name)), a)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01abcd")
    with pytest.raises(UsageError, match="bad magic"):
        D.read_idx(str(tmp_path / "bad"))
    raw = gzip.decompress((tmp_path / "x.idx.gz").read_bytes())
    (tmp_path / "short.idx").write_bytes(raw[:-3])
    with pytest.raises(UsageError, match="truncated"):
        D.read_idx(str(tmp_path / "short.idx"))


def test_shipped_sample():
    train, test = D.load_sample("train"), D.load_sample("test")
    assert train.images.shape == (6000, 28, 28, 1) and test.images.shape == (1500, 28, 28, 1)
    assert np.bincount(train.labels).tolist() == [600] * 10
    h = H.load(D.sample_hierarchy_path())
    assert h.superclasses == ["tops", "footwear", "other"] and h.head_width == 4
    sup, loc = h.mapping(train.classes)
    assert sup.tolist() == [0, 2, 0, 2, 0, 1, 0, 1, 2, 1]


def test_hierarchy_errors(tmp_path):
    bad = tmp_path / "h.json"
    bad.write_text('{"superclasses": [{"name": "a", "subclasses": ["x"]}, {"name": "b", "subclasses": ["x"]}]}')
    with pytest.raises(UsageError, match="two superclasses"):
        H.load(str(bad))
    bad.write_text("{nope")
    with pytest.raises(UsageError, match="not valid JSON"):
        H.load(str(bad))
    h = H.from_dict(
        {"fine_label_names": ["a", "b", "c"], "coarse_label_names": ["u", "v"], "fine_to_coarse": [0, 1, 1]}
    )
    assert h.subclasses == [["a"], ["b", "c"]]
    with pytest.raises(UsageError, match="not in the hierarchy"):
        h.mapping(["a", "z"])


def make_cifar10_archive(path, n=20):
    """A tiny archive in the official CIFAR-10 python format."""
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:

        def add(name, obj):
            data = pickle.dumps(obj)
            info = tarfile.TarInfo("cifar-10-batches-py/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("batches.meta", {b"label_names": [s.encode() for s in names]})
        for i in range(1, 6):
            add(
                "data_batch_{}".format(i),
                {
                    b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                    b"labels": [int(v) for v in rng.integers(0, 10, n)],
                },
            )
        add(
            "test_batch",
            {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(v) for v in np.arange(n) % 10]},
        )
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return data


def test_cifar_archive_loader(tmp_path):
    from edgetool.toolchain.data.cifar import load_archive

    data = make_cifar10_archive(str(tmp_path / "cifar-10-python.tar.gz"))
    train, hier = load_archive(str(tmp_path / "cifar-10-python.tar.gz"), "train")
    test, _ = load_archive(str(tmp_path / "cifar-10-python.tar.gz"), "test")
    assert train.images.shape == (100, 32, 32, 3) and test.images.shape == (20, 32, 32, 3)
    assert hier.superclasses == ["vehicle", "animal"]
    # channel-major rows become HWC images
    with tarfile.open(str(tmp_path / "cifar-10-python.tar.gz")) as tar:
        tb = pickle.loads(tar.extractfile("cifar-10-batches-py/test_batch").read())
    np.testing.assert_array_equal(test.images[3, :, :, 1], tb[b"data"][3, 1024:2048].reshape(32, 32))
    (tmp_path / "junk.tar.gz").write_bytes(data[:100])
    with pytest.raises(UsageError):
        load_archive(str(tmp_path / "junk.tar.gz"), "train")


@pytest.fixture()
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, "http://127.0.0.1:{}".format(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def test_download_from_local_server(run_cli, http_server, tmp_path):
    root, base = http_server
    data = make_cifar10_archive(str(root / "cifar-10-python.tar.gz"))
    md5 = hashlib.md5(data).hexdigest()
    dest = tmp_path / "dl"
    url = base + "/cifar-10-python.tar.gz"
    proc = run_cli("data", "download", "cifar10", "--dir", dest, "--url", url, "--md5", md5)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "cifar-10-python.tar.gz").read_bytes() == data
    assert "20 test images, 10 classes in 2 superclasses" in proc.stdout


def test_download_checksum_failure_keeps_nothing(run_cli, http_server, tmp_path):
    root, base = http_server
    make_cifar10_archive(str(root / "cifar-10-python.tar.gz"))
    dest = tmp_path / "dl"
    url = base + "/cifar-10-python.tar.gz"
    proc = run_cli("data", "download", "cifar10", "--dir", dest, "--url", url, "--md5", "0" * 32)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "checksum mismatch" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert os.listdir(dest) == []
    proc = run_cli("data", "download", "cifar10", "--dir", dest, "--url", base + "/missing.tar.gz")
    assert proc.returncode != 0 and "cannot download" in proc.stderr


def test_train_on_cifar_archive(run_cli, tmp_path):
    pytest.importorskip("torch")
    make_cifar10_archive(str(tmp_path / "cifar-10-python.tar.gz"), n=30)
    proc = run_cli(
        "train",
        tmp_path / "run",
        "--data",
        tmp_path,
        "--epochs",
        "1",
        "--ft-epochs",
        "1",
        "--qat-epochs",
        "1",
        "--base-init",
        "scratch",
        "--modes",
        "superclass,qat",
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "qat" / "1.pt").is_file()
    assert not (tmp_path / "run" / "flat.pt").exists()
