"""The one device/precision policy (transferkit.runtime) on every kind of host, by monkeypatched capabilities."""

import inspect
import json
import os

import pytest
import torch

from transferkit import runtime
from transferkit.runtime import RuntimeConfigError, precision_decision, resolve_device, resolve_precision

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512bw", "avx512_bf16", "avx512_vnni"}
AMX = AVX512_BF16 | {"amx_tile", "amx_bf16", "amx_int8"}


def host(monkeypatch, flags, kernel="AVX512", speedup=3.0):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    monkeypatch.setattr(runtime, "kernel_capability", lambda: kernel)
    runtime.cpu_bf16_confirmed.cache_clear()
    monkeypatch.setattr(runtime, "measure_bf16_speedup", lambda: speedup)


@pytest.fixture(autouse=True)
def _fresh_micro_check(tmp_path, monkeypatch):
    """Each test starts on a machine whose micro-check has not run (no cached result in memory or on disk)."""
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    runtime.cpu_bf16_confirmed.cache_clear()
    yield
    runtime.cpu_bf16_confirmed.cache_clear()


def test_avx2_only_host_runs_fp32(monkeypatch):
    host(monkeypatch, AVX2, kernel="AVX2")
    prec, why = precision_decision("cpu")
    assert prec == "fp32" and "neither AVX512-BF16 nor AMX-BF16" in why
    assert resolve_precision("auto", "cpu") == "fp32"


@pytest.mark.parametrize("flags,name", [(AVX512_BF16, "avx512_bf16"), (AMX, "amx_bf16")])
def test_bf16_hosts_run_bf16_when_it_is_faster(monkeypatch, tmp_path, flags, name):
    host(monkeypatch, flags)
    prec, why = precision_decision("cpu")
    assert prec == "bf16" and name in why and "3.0×" in why
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "slow-bf16-machine"))
    host(monkeypatch, flags, speedup=1.1)  # bf16 instructions, but no faster here: fp32
    prec, why = precision_decision("cpu")
    assert prec == "fp32" and "below" in why


def test_avx2_capped_kernels_run_fp32_on_a_bf16_cpu(monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 (how the suite mimics an AVX2-only host) caps torch's kernels: no bf16."""
    host(monkeypatch, AMX, kernel="AVX2")
    prec, why = precision_decision("cpu")
    assert prec == "fp32" and "run at AVX2" in why


def test_cuda_counts_native_bf16_only(monkeypatch):
    seen = {}

    def supported(including_emulation=True):
        seen["emulation"] = including_emulation
        return seen["native"]

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "GPU-X")
    for native, want in ((True, "bf16"), (False, "fp32")):
        seen["native"] = native
        assert precision_decision(torch.device("cuda"))[0] == want
        assert seen["emulation"] is False  # emulated bf16 on an old GPU is slower than fp32


def test_explicit_precisions_pass_through_and_bad_ones_are_named():
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(RuntimeConfigError, match="--precision 'fp8' is not one of auto, fp32, bf16$"):
        resolve_precision("fp8", "cpu")


def test_micro_check_runs_once_per_machine_and_is_cached_on_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    calls = []
    host(monkeypatch, AVX512_BF16)
    monkeypatch.setattr(runtime, "measure_bf16_speedup", lambda: calls.append(1) or 2.5)
    assert precision_decision("cpu")[0] == "bf16"
    doc = json.loads((tmp_path / "runtime.json").read_text())
    assert list(doc["bf16"].values()) == [2.5]
    runtime.cpu_bf16_confirmed.cache_clear()  # a new process: reads the file, measures nothing
    assert precision_decision("cpu")[0] == "bf16" and calls == [1]


def test_the_probes_the_policy_relies_on_exist_in_this_torch():
    """If torch drops or renames one of these, this fails instead of the policy quietly answering fp32."""
    caps = torch.cpu.get_capabilities()
    assert {"avx2", "avx512_bf16", "amx_bf16"} <= set(caps)
    assert isinstance(torch.backends.cpu.get_cpu_capability(), str)
    assert "including_emulation" in inspect.signature(torch.cuda.is_bf16_supported).parameters
    flags = runtime.cpu_flags.__wrapped__()  # the OS's view (or torch's), uncached
    assert bool(caps["avx2"]) == ("avx2" in flags)
    assert bool(caps["avx512_bf16"]) == ("avx512_bf16" in flags)


def test_devices():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeConfigError, match="not a device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeConfigError, match="torch sees none"):
            resolve_device("cuda")


def test_int8_is_an_inference_precision_on_cpu_only():
    assert resolve_precision("int8", "cpu", inference=True) == "int8"
    with pytest.raises(RuntimeConfigError, match="extraction and prediction only"):
        resolve_precision("int8", "cpu")
    if torch.cuda.is_available():
        with pytest.raises(RuntimeConfigError, match="quantises for the CPU"):
            resolve_precision("int8", "cuda", inference=True)


def test_int8_hardware_is_vnni_or_amx(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: AVX2)
    assert runtime.cpu_int8_hardware()[0] is False
    monkeypatch.setattr(runtime, "cpu_flags", lambda: AVX512_BF16)
    assert runtime.cpu_int8_hardware() == (True, "the CPU has avx512_vnni")


def test_measured_decisions_run_once_per_machine_and_question(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    calls = []
    assert runtime.measured("graph", "a", lambda: calls.append("a") or 1.5) == 1.5
    assert runtime.measured("graph", "a", lambda: calls.append("again") or 9.0) == 1.5  # from runtime.json
    assert runtime.measured("graph", "b", lambda: calls.append("b") or 0.8) == 0.8
    assert calls == ["a", "b"]
    monkeypatch.setattr(runtime, "cpu_flags", lambda: AVX2)  # another machine: measured again
    assert runtime.measured("graph", "a", lambda: calls.append("other machine") or 1.2) == 1.2
    (tmp_path / "runtime.json").write_text("not json")  # a damaged cache is measured over, not fatal
    assert runtime.measured("graph", "a", lambda: 1.3) == 1.3


def test_the_allocator_policy_is_applied_once_and_can_be_turned_off(monkeypatch):
    runtime.tune_allocator.cache_clear()
    monkeypatch.setenv("TRANSFERKIT_ALLOCATOR", "system")
    assert runtime.tune_allocator().startswith("system")
    runtime.tune_allocator.cache_clear()
    monkeypatch.delenv("TRANSFERKIT_ALLOCATOR")
    assert runtime.tune_allocator() in ("no-mmap", "system (not glibc)")
    runtime.tune_allocator.cache_clear()


def test_auto_is_known_without_torch_once_decided_on_this_machine(monkeypatch):
    host(monkeypatch, AMX)
    assert runtime.known_precision("auto", "auto") is None  # never decided on this machine
    assert runtime.known_precision("fp32", "cpu") == "fp32" and runtime.known_precision("int8", "cpu") == "int8"
    assert runtime.known_precision("bf16", "auto") == "bf16"  # named precisions pass through on any device
    assert runtime.known_precision("int8", "auto") is None  # only torch knows whether "auto" is the CPU
    decided = resolve_precision("auto", "auto")
    assert decided == "bf16" and runtime.known_precision("auto", "auto") == "bf16"
    assert runtime.known_precision("auto", "cpu") is None  # another device asked for: not decided yet
    orig = os.environ.get("ATEN_CPU_CAPABILITY")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default" if orig == "avx2" else "avx2")  # what decides it changed
    assert runtime.known_precision("auto", "auto") is None
    if orig is None:
        monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    else:
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", orig)
    assert runtime.known_precision("auto", "auto") == "bf16"
    host(monkeypatch, AVX2, kernel="AVX2")  # another CPU
    assert runtime.known_precision("auto", "auto") is None
    assert resolve_precision("auto", "auto") == "fp32" and runtime.known_precision("auto", "auto") == "fp32"


def test_records_from_processes_at_the_same_moment_are_all_kept(tmp_path, monkeypatch):
    """runtime.json is read, modified and written under its lock: eight threads recording one entry each while
    the others do keep all eight (without the lock, writers that read before another's write drop its entry)."""
    import threading

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    real = json.loads

    def slow_loads(text, *a, **k):  # widen the read-modify-write window
        import time

        time.sleep(0.02)
        return real(text, *a, **k)

    monkeypatch.setattr(runtime.json, "loads", slow_loads)
    threads = [threading.Thread(target=runtime._cache_put, args=("graph", f"k{i}", i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(runtime.json, "loads", real)
    assert json.loads((tmp_path / "runtime.json").read_text())["graph"] == {f"k{i}": i for i in range(8)}


def test_cuda_under_torchrun_is_this_process_gpu_not_gpu_0(monkeypatch):
    import torch

    from transferkit.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")  # a local rank beyond the GPUs seen: GPU 3 mod 2
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # asked for by number: kept
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_device("cuda") == torch.device("cuda")


def test_memory_sizes_read_like_people_write_them():
    from transferkit.runtime import RuntimeConfigError, memory_budget, physical_memory

    assert memory_budget("2GB") == 2 << 30 and memory_budget("500 MB") == 500 << 20
    assert memory_budget("1.5GiB") == 3 << 29 and memory_budget(4096) == 4096 and memory_budget("64k") == 64 << 10
    assert memory_budget("auto") == memory_budget(None) == physical_memory() // 2 > 0
    for bad in ("lots", "-1GB", "2XB", "", "0"):
        with pytest.raises(RuntimeConfigError, match="not a memory size"):
            memory_budget(bad)


def test_a_containers_memory_limit_caps_auto(monkeypatch):
    from pathlib import Path

    from transferkit import runtime

    read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "1073741824\n" if str(self) ==
                        "/sys/fs/cgroup/memory.max" else read(self, *a, **k))
    assert runtime.physical_memory() == 1 << 30 and runtime.memory_budget("auto") == 1 << 29
