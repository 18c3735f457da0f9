"""Hostile files inside a bundle: links out, FIFOs, sparse files, decompression and archive bombs."""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import textwrap

import pytest

from edgetool.runtime.bundle.reader import Bundle
from edgetool.runtime.errors import BundleError

from hostile import load_manifest, private_tmp, save_manifest, snapshot, to_codec, write_listed  # noqa: F401


def _refused(root, tmp, needle, index=None, archive=None):
    """Bundle.open (and read_delta *index*) raise BundleError containing *needle*; nothing changes."""
    before = snapshot(root, tmp)
    with pytest.raises(BundleError) as exc:
        with Bundle.open(archive or root) as b:
            if index is not None:
                b.read_delta(index)
    assert needle in str(exc.value), str(exc.value)
    assert snapshot(root, tmp) == before
    return str(exc.value)


def _delta_path(root, k=0):
    return os.path.join(root, load_manifest(root)["deltas"][k]["file"])


def test_delta_symlink_to_dev_zero(bundle_copy, private_tmp):  # noqa: F811
    p = _delta_path(bundle_copy)
    os.remove(p)
    os.symlink("/dev/zero", p)
    _refused(bundle_copy, private_tmp, "symbolic link")


def test_delta_symlink_to_outside_copy_with_matching_hash(bundle_copy, tmp_path, private_tmp):  # noqa: F811
    p = _delta_path(bundle_copy)
    outside = tmp_path / "outside.bin"
    shutil.copy(p, outside)
    os.remove(p)
    os.symlink(str(outside), p)
    msg = _refused(bundle_copy, private_tmp, "symbolic link")
    assert str(os.path.getsize(outside)) not in msg  # nothing about the outside file leaks


def test_deltas_folder_symlink_to_outside(bundle_copy, tmp_path, private_tmp):  # noqa: F811
    d = os.path.join(bundle_copy, "deltas")
    shutil.move(d, str(tmp_path / "elsewhere"))
    os.symlink(str(tmp_path / "elsewhere"), d)
    _refused(bundle_copy, private_tmp, "folder deltas is a symbolic link")


def test_delta_fifo_does_not_hang(bundle_copy, private_tmp):  # noqa: F811
    p = _delta_path(bundle_copy)
    os.remove(p)
    os.mkfifo(p)
    _refused(bundle_copy, private_tmp, "not a regular file")


def test_sparse_100_gib_delta_is_not_read(bundle_copy, private_tmp):  # noqa: F811
    p = _delta_path(bundle_copy)
    with open(p, "r+b") as f:
        f.truncate(100 << 30)
    _refused(bundle_copy, private_tmp, "size 107374182400 bytes, manifest says")
    m = load_manifest(bundle_copy)
    m["deltas"][0]["stored_size"] = 100 << 30
    save_manifest(bundle_copy, m)
    _refused(bundle_copy, private_tmp, "deltas[0].size")


def zstd_bomb(gib=1):
    import zstandard

    c = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    zeros = bytes(1 << 20)
    return b"".join([c.compress(zeros) for _ in range(gib << 10)] + [c.flush()])


def zstd_header_bomb():
    """A zstd frame whose header claims 2**40 bytes (single segment, one empty raw block)."""
    return struct.pack("<I", 0xFD2FB528) + bytes([0xE0]) + struct.pack("<Q", 1 << 40) + b"\x01\x00\x00"


def sevenzip_bomb(mib=32):
    import py7zr

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": 1}]) as a:
        a.writef(io.BytesIO(bytes(mib << 20)), "delta.bin")
    return buf.getvalue()


def plant(root, codec, data, k=0):
    """Make delta *k* a *codec* file holding *data*, with a matching size and sha256 in the manifest."""
    if codec == "zstd":
        to_codec(root, "zstd")
    m = load_manifest(root)
    write_listed(root, m["deltas"][k], data, "stored_size")
    m["deltas"][k]["stored_size"] = len(data)
    save_manifest(root, m)


@pytest.mark.parametrize(
    "codec,make,needle",
    [
        ("zstd", zstd_bomb, "decodes to more than the"),
        ("zstd", zstd_header_bomb, "frame header declares 1099511627776 bytes"),
        ("7z", sevenzip_bomb, "7z member declares 33554432 bytes"),
    ],
    ids=["zstd-stream", "zstd-header", "7z"],
)
def test_decompression_bomb_refused(bundle_copy, private_tmp, codec, make, needle):  # noqa: F811
    plant(bundle_copy, codec, make())
    _refused(bundle_copy, private_tmp, needle, index=0)


class _Zeros(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def tar_bomb(root, path, mib=512):
    """A .tar.gz of the bundle with a *mib* MiB member of zeros first (before manifest.json)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("bundle/deltas/huge.bin")
        info.size = mib << 20
        tar.addfile(info, _Zeros(info.size))
        tar.add(root, arcname="bundle")
    return path


def _tar_with(root, path, member, data=b"x", kind=tarfile.REGTYPE, target=""):
    with tarfile.open(path, "w") as tar:
        tar.add(root, arcname="bundle")
        info = tarfile.TarInfo(member)
        info.type = kind
        info.linkname = target
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize(
    "member,kind,target,needle",
    [
        ("bundle/evil", tarfile.SYMTYPE, "/etc/passwd", "not a file or folder"),
        ("bundle/deltas/hard", tarfile.LNKTYPE, "bundle/base.onnx", "not a file or folder"),
        ("bundle/../evil", tarfile.REGTYPE, "", "unsafe archive member"),
        ("/etc/evil", tarfile.REGTYPE, "", "unsafe archive member"),
        ("bundle/extra.bin", tarfile.REGTYPE, "", "not listed in the manifest"),
        ("bundle/dev", tarfile.CHRTYPE, "", "not a file or folder"),
    ],
    ids=["symlink", "hardlink", "dotdot", "absolute", "extra", "device"],
)
def test_hostile_archive_member_refused(tiny_bundle, tmp_path, private_tmp, member, kind, target, needle):  # noqa: F811
    path = _tar_with(tiny_bundle, str(tmp_path / "b.tar"), member, kind=kind, target=target)
    _refused(str(tmp_path), private_tmp, needle, archive=path)
    assert os.listdir(private_tmp) == []


def test_archive_member_size_differs_from_manifest(tiny_bundle, tmp_path, private_tmp):  # noqa: F811
    root = str(tmp_path / "bundle")
    shutil.copytree(tiny_bundle, root)
    with open(os.path.join(root, "samples.npy"), "ab") as f:
        f.write(b"more")
    path = str(tmp_path / "b.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname="bundle")
    _refused(str(tmp_path), private_tmp, "samples.npy' declares", archive=path)


def test_truncated_archive(tiny_bundle, tmp_path, private_tmp):  # noqa: F811
    path = str(tmp_path / "b.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tiny_bundle, arcname="bundle")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    _refused(str(tmp_path), private_tmp, "cannot unpack archive", archive=path)
    assert os.listdir(private_tmp) == []


def test_tar_bomb_refused_before_unpacking(tiny_bundle, tmp_path, private_tmp):  # noqa: F811
    path = tar_bomb(tiny_bundle, str(tmp_path / "bomb.tar.gz"))
    _refused(str(tmp_path), private_tmp, "huge.bin' is not listed in the manifest", archive=path)
    assert os.listdir(private_tmp) == []


RSS_SCRIPT = textwrap.dedent("""
    import json, sys, tarfile, lzma, gzip, zlib
    import py7zr, zstandard, numpy
    from edgetool.runtime.bundle.reader import Bundle
    from edgetool.runtime.errors import BundleError

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

    path, index = sys.argv[1], int(sys.argv[2])
    try:
        Bundle.open(path).close()  # warm-up: the same code, imports and first allocations
    except BundleError:
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    base = status("VmRSS:")
    try:
        with Bundle.open(path) as b:
            b.read_delta(index)
        refused = ""
    except BundleError as exc:
        refused = str(exc)
    print(json.dumps({"growth": status("VmHWM:") - base, "refused": refused}))
""")


def _rss_growth(path, index):
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs /proc/self/clear_refs (Linux) to reset the peak RSS")
    proc = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, path, str(index)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bomb_peak_rss_under_twice_the_declared_bundle(tiny_bundle, tmp_path):
    """Peak RSS growth while refusing each bomb, in a fresh subprocess, < 2x the bundle's declared bytes."""
    declared = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tiny_bundle) for f in fs)
    cases = {}
    for codec, make in (("zstd", zstd_bomb), ("zstd", zstd_header_bomb), ("7z", sevenzip_bomb)):
        root = str(tmp_path / "{}-{}".format(codec, make.__name__))
        shutil.copytree(tiny_bundle, root)
        plant(root, codec, make())
        cases[make.__name__] = (root, 0)
    cases["tar_bomb"] = (tar_bomb(tiny_bundle, str(tmp_path / "bomb.tar.gz")), 0)
    for name, (path, index) in cases.items():
        r = _rss_growth(path, index)
        assert r["refused"], name
        assert r["growth"] < 2 * declared, (name, r, declared)
