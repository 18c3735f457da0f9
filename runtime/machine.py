"""What this machine is: one GPU probe and one machine name for reports and engines."""
from __future__ import annotations

import os
import platform


def device_tree_model() -> str:
    """The board's model string from /proc/device-tree/model ("" where there is none)."""
    try:
        with open("/proc/device-tree/model", "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00").strip()
    except OSError:
        return ""


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
        return {"available": True, "name": dev.name(), "compute_capability": "{}.{}".format(*dev.compute_capability()),
                "cuda_driver": cuda.get_driver_version(), "free_mib": free // 2 ** 20, "total_mib": total // 2 ** 20}
    except ImportError:
        return {"available": False, "reason": "pycuda is not installed (pip install 'edgetool[jetson]')"}
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
