"""What this machine is: one GPU probe, one machine name for reports and engines, and the platform report."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any, Dict, Optional

L4T_RELEASE = "/etc/nv_tegra_release"  # present on every Jetson (L4T)


def device_tree_model() -> str:
    """The board's model string from /proc/device-tree/model ("" where there is none)."""
    try:
        with open("/proc/device-tree/model", "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00").strip()
    except OSError:
        return ""


def is_jetson() -> bool:
    """Whether this machine is an NVIDIA Jetson (L4T's release file, or the board's model string)."""
    return os.path.exists(L4T_RELEASE) or "jetson" in device_tree_model().lower()


def gpu_info() -> dict:
    """Name, compute capability, driver and memory of CUDA device 0, or why there is none."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return {"available": False, "reason": "no CUDA device"}
        dev = cuda.Device(0)
        ctx = dev.make_context()
        try:
            free, total = cuda.mem_get_info()
        finally:
            ctx.pop()
        return {
            "available": True,
            "name": dev.name(),
            "compute_capability": "{}.{}".format(*dev.compute_capability()),
            "cuda_driver": cuda.get_driver_version(),
            "free_mib": free // 2**20,
            "total_mib": total // 2**20,
            "free_bytes": int(free),
            "total_bytes": int(total),
        }
    except ImportError:
        from .choices import install_hint

        return {
            "available": False,
            "reason": "pycuda is not installed ({})".format(install_hint("pycuda", is_jetson())),
        }
    except Exception as exc:  # cuInit fails without a driver or device
        return {"available": False, "reason": "CUDA unavailable: {}".format(str(exc).splitlines()[0])}


def gpu_name() -> str:
    """The CUDA device name an engine is recorded with (``unknown`` without pycuda or a GPU)."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        return str(cuda.Device(0).name())
    except Exception:  # no pycuda, no driver or no device: all mean "unknown" here
        return "unknown"


def machine_name() -> str:
    """CPU model, core count and OS, as benchmark results and reports name the machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "{} ({} cores), {} {}".format(cpu, os.cpu_count(), platform.system(), platform.release())


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def platform_info() -> dict:
    """Board, L4T, JetPack, host memory, the device packages' versions and the GPU, for ``edgetool doctor``."""
    info: Dict[str, Any] = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "os": platform.platform(),
    }
    l4t = _read(L4T_RELEASE)
    if l4t:
        info["l4t"] = l4t.splitlines()[0]
    model = _read("/proc/device-tree/model")
    if model:
        info["device"] = model.strip("\x00")
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout:
            info["jetpack"] = out.stdout
    except (OSError, subprocess.SubprocessError):
        pass
    mem = _read("/proc/meminfo")
    if mem:
        for line in mem.splitlines():
            if line.startswith("MemAvailable:"):
                info["host_mem_available_mib"] = int(line.split()[1]) // 1024
    for mod, key in (
        ("tensorrt", "tensorrt"),
        ("onnxruntime", "onnxruntime"),
        ("pycuda", "pycuda"),
        ("numpy", "numpy"),
    ):
        try:
            m = __import__(mod)
            info[key] = getattr(m, "__version__", getattr(m, "VERSION_TEXT", "?"))
        except Exception as exc:  # a broken install is information too
            info[key] = "not installed" if isinstance(exc, ImportError) else "broken ({})".format(exc)
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    info["gpu"] = gpu_info()
    return info
