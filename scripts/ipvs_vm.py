#!/usr/bin/env python3
"""Run the IPVS kernel tests (or any command) inside a QEMU guest with the Debian kernel.

This host kernel has no IPVS; the stock Debian kernel has it as a module. The script
(root, Debian 12) installs the host tools it needs, downloads the current
``linux-image-amd64`` dependency into a cache (reused between runs), boots it ONCE with
virtme-ng in software mode, loads ``ip_vs`` and its schedulers, runs the command from the
repository root and returns its exit code. Results come back through ``--rwdir`` (OUT).

The guest sees the host root read-only over 9p, where every page of the Python binary and
every module file costs a slow round trip. So the Python runtime, the site-packages the
guest needs and a few tools are copied into the guest's RAM from one tar file (the "pack")
and bind-mounted over their host paths: same paths, no 9p latency.

Usage (from the repository, as root):
    .venv/bin/python scripts/ipvs_vm.py                 # pytest -m ipvs tests/kernel
    .venv/bin/python scripts/ipvs_vm.py -- .venv/bin/python bench/ipvs_reconcile.py
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEBS = ["qemu-system-x86", "busybox-static", "kmod", "udev", "file", "ipvsadm"]
KERNEL_META = "linux-image-amd64"
# /var/cache is a tmpfs inside the guest: the extracted modules must live elsewhere.
DEFAULT_CACHE = Path("/var/lib/piranha-etcd/kernel")
MODULES = ["ip_vs"] + [
    f"ip_vs_{s}"
    for s in ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf")
]
# Hardware drivers udev would load for QEMU's q35 machine; none is needed (saves seconds).
BLACKLIST = (
    "kvm,kvm_amd,kvm_intel,powernow_k8,ahci,libahci,libata,sr_mod,cdrom,sg,scsi_mod,"
    "iTCO_wdt,iTCO_vendor_support,intel_pmc_bxt,i6300esb,lpc_ich,i2c_i801,i2c_smbus,pcspkr,"
    "psmouse,serio_raw,evdev,aesni_intel,ghash_clmulni_intel,sha512_ssse3,sha256_ssse3,"
    "sha1_ssse3,crypto_simd,cryptd,button,joydev,drm,bochs,qemu_fw_cfg,watchdog"
)
# Distributions the guest imports (with their dependencies): the project's runtime (agent,
# lvsctl, lvslab) and the test runner. Test-only extras (scapy, matplotlib, ...) stay out.
GUEST_DISTS = ["piranha-etcd", "pytest", "pytest-asyncio", "pytest-timeout"]
# Tools it runs: the kernel tests', the lab's (ip, nft, etcd, curl), the benchmarks' (etcdctl)
# and a few to look around.
GUEST_TOOLS = ["ipvsadm", "ip", "nsenter", "bash", "grep", "sh", "modprobe", "tar", "mount",
               "etcd", "etcdctl", "nft", "curl", "conntrack", "sysctl", "ss", "ping", "arping"]
# lib-dynload modules the guest never loads: their libraries (X11, Tk, ...) stay out.
UNUSED_SO = ("_tkinter", "_curses", "readline", "_sqlite3", "_dbm", "_gdbm", "nis")
STDLIB_SKIP = {
    "site-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip",
    "lib2to3", "pydoc_data", "__phello__",
}


def log(msg: str) -> None:
    print(f"ipvs-vm: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, **kw)


# ---------------------------------------------------------------- host packages and kernel


def ensure_debs() -> None:
    missing = [
        p for p in DEBS
        if "install ok installed" not in subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
        ).stdout
    ]
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")  # packaged services (udev) must not start
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    finally:
        if ours:
            policy.unlink()


def kernel_package() -> str:
    """The package linux-image-amd64 depends on now, e.g. linux-image-6.1.0-56-amd64."""
    for attempt in range(2):
        out = subprocess.run(
            ["apt-cache", "depends", KERNEL_META], capture_output=True, text=True
        ).stdout
        m = re.search(r"Depends:\s*(linux-image-\S+)", out)
        if m:
            return m.group(1)
        if attempt == 0:
            run(["apt-get", "update", "-qq"])
    sys.exit(f"ipvs-vm: cannot resolve the package behind {KERNEL_META}")


def ensure_kernel(cache: Path) -> tuple[Path, str]:
    """Download and unpack the current Debian kernel once; return (vmlinuz, version)."""
    pkg = kernel_package()
    version = pkg.removeprefix("linux-image-")
    root = cache / f"root-{version}"
    vmlinuz = root / "boot" / f"vmlinuz-{version}"
    if (root / "lib/modules" / version / "modules.dep").exists() and vmlinuz.exists():
        return vmlinuz, version
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.iterdir():  # keep only the current kernel
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    log(f"downloading {pkg}")
    cmd = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg]
    if subprocess.run(cmd, cwd=cache).returncode != 0:
        run(["apt-get", "update", "-qq"])  # stale lists name a version the mirror dropped
        run(cmd, cwd=cache)
    deb = next(cache.glob(f"{pkg}_*.deb"))
    tmp = cache / f"tmp-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    run(["dpkg", "-x", str(deb), str(tmp)])
    run(["depmod", "-b", str(tmp), version])  # the .deb ships no modules.dep
    tmp.rename(root)
    deb.unlink()
    return vmlinuz, version


# ---------------------------------------------------------------- the pack


def walk(top: Path, skip_dirs: set[str] = frozenset()) -> list[Path]:  # type: ignore[assignment]
    """Every directory and file under top, without the skipped directory names."""
    found = [top]
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [
            d for d in dirnames if d not in skip_dirs and not d.startswith("config-3")
        ]
        found += [Path(dirpath, d) for d in dirnames]
        found += [
            Path(dirpath, f) for f in filenames
            if not (f.endswith((".opt-1.pyc", ".opt-2.pyc", ".whl", ".exe")))
        ]
    return found


def dists_closure(names: list[str]) -> list[metadata.Distribution]:
    """The named distributions and everything they require (markers evaluated)."""
    from packaging.requirements import Requirement

    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def site_entries(purelib: Path) -> list[Path]:
    """Top-level site-packages entries of the guest's distributions and this project."""
    dists = dists_closure(GUEST_DISTS)  # piranha-etcd is editable: its finder and .pth
    tops: set[str] = {"__pycache__"}
    for dist in dists:
        for f in dist.files or []:
            first = f.parts[0]
            if first != ".." and (purelib / first).exists():
                tops.add(first)
    return sorted(purelib / t for t in tops)


def shared_libs(files: list[Path]) -> set[str]:
    """Paths (as the loader names them) of the shared libraries the ELF files load."""
    libs: set[str] = set()
    for i in range(0, len(files), 200):
        out = subprocess.run(
            ["ldd", *map(str, files[i : i + 200])], capture_output=True, text=True
        ).stdout
        libs.update(m.group(1) for m in re.finditer(r"(/\S+) \(0x", out))
    return libs


def build_pack(out: Path) -> int:
    """Write OUT/pack.tar and OUT/pack.binds (paths to bind-mount); return the path count.

    Trees (stdlib, site-packages) and tools keep their paths; shared libraries go flat
    into piranha-libs/ for LD_LIBRARY_PATH (a bind mount per library is slow in the guest).
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    purelib = Path(sysconfig.get_paths()["purelib"])
    if purelib.is_relative_to(stdlib):
        sys.exit("ipvs-vm: run this script with the project's venv python")
    entries = [*walk(stdlib, STDLIB_SKIP), purelib]
    for top in site_entries(purelib):
        entries += walk(top) if top.is_dir() else [top]
    tools = [Path(os.path.realpath(sys.executable))]
    tools += [Path(os.path.realpath(p)) for t in GUEST_TOOLS if (p := shutil.which(t))]
    tools = sorted(set(tools))
    modules = [p for p in entries if p.suffix == ".so" and not p.name.startswith(UNUSED_SO)]
    libs = sorted(shared_libs(tools + modules))
    loader = sorted({os.path.realpath(lib) for lib in libs if "/ld-linux" in lib})
    entries += tools
    binds = [str(stdlib), str(purelib), *map(str, tools), *loader]
    (out / "pack.list").write_text("".join(f"{str(p)[1:]}\n" for p in entries + loader))
    (out / "pack.libs").write_text("".join(f"{lib[1:]}\n" for lib in libs))
    (out / "pack.binds").write_text("".join(f"{b}\n" for b in binds))
    tar = ["tar", "--no-recursion", "-C", "/", "-f", str(out / "pack.tar")]
    run([*tar, "-c", "-T", str(out / "pack.list")])
    flat = ["-h", "--hard-dereference", "--transform=s,.*/,piranha-libs/,"]
    run([*tar, "-r", *flat, "-T", str(out / "pack.libs")])
    return len(entries) + len(loader) + len(libs)


def compile_project() -> None:
    """Byte-compile the project on the host: the guest cannot write its __pycache__ (the root
    is read-only there) and compiling every module at each import costs seconds under QEMU."""
    dirs = [str(REPO / d) for d in ("agent", "cluster", "lvslab", "tests", "bench", "scripts")
            if (REPO / d).is_dir()]
    run([sys.executable, "-m", "compileall", "-q", "-j", "0", *dirs], stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- the guest


GUEST_SH = """#!/bin/sh
# Generated by scripts/ipvs_vm.py: runs as root inside the guest.
set -e
P=/run/piranha-pack
mkdir -p $P
up() {{ cut -d' ' -f1 /proc/uptime; }}
t0=$(up)
tar -C $P -b 2048 -xf {out}/pack.tar
t1=$(up)
export LD_LIBRARY_PATH=$P/piranha-libs
while IFS= read -r t; do mount --bind "$P$t" "$t"; done < {out}/pack.binds
t2=$(up)
modprobe -a {modules}
echo "ipvs-vm: guest ready at $(up) s: boot $t0, unpack $t1, bind $t2 (kernel $(uname -r))" >&2
cd {repo}
# The project's venv first (pulse, lvsctl, lvslab, pytest), then the packed tools.
export PATH={repo}/.venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PIRANHA_VM_OUT={out}
exec {command}
"""


def default_command(out: Path) -> list[str]:
    return [
        str(REPO / ".venv/bin/pytest"), "-m", "ipvs", "tests/kernel", "tests/ipvs_lab", "-q",
        "-p", "no:cacheprovider", "--confcutdir=tests/kernel", f"--junitxml={out}/junit.xml",
        "--capture=sys", "--durations=8",
    ]


def summarize_junit(path: Path) -> None:
    if not path.exists():
        log("no junit report came back from the guest")
        return
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is not None:
        a = suite.attrib
        log(
            f"junit: tests={a.get('tests')} failures={a.get('failures')} "
            f"errors={a.get('errors')} skipped={a.get('skipped')} time={a.get('time')}s"
        )


def boot(vmlinuz: Path, out: Path, args: argparse.Namespace) -> int:
    venv_bin = Path(sys.executable).parent
    vng = venv_bin / "vng"
    if not vng.exists():
        sys.exit(f"ipvs-vm: {vng} is missing (run scripts/setup.sh)")
    cmd = [
        str(vng), "--disable-kvm", "--force-9p", "-r", str(vmlinuz), f"--rwdir={out}",
        "--memory", args.memory, "--cpus", str(args.cpus),
        "-a", f"module_blacklist={BLACKLIST}", "-e", f"sh {out}/guest.sh",
    ]
    env = dict(os.environ, PATH=f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    # The guest's console goes through a pipe: QEMU handed a regular file as stdout
    # rewrites it from the start, which lost everything the test run printed before.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    pump = threading.Thread(target=_forward, args=(proc.stdout,), daemon=True)
    pump.start()
    try:
        code = proc.wait(timeout=args.timeout)
        pump.join(5)
        return code
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        log(f"stopping the guest (timeout {args.timeout} s or interrupted)")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return 124


def _forward(stream: object) -> None:
    for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


def use_venv() -> None:
    """Re-run under the project's venv: the pack copies *its* Python and site-packages."""
    venv = REPO / ".venv"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    python = venv / "bin" / "python"
    if not python.exists():
        sys.exit(f"ipvs-vm: {python} is missing: run scripts/setup.sh first")
    os.execv(python, [str(python), __file__, *sys.argv[1:]])


HIDDEN_IN_GUEST = ("/var/cache", "/var/tmp", "/var/log", "/var/lib/apt", "/run", "/dev")


def main() -> int:
    use_venv()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="kernel cache dir")
    parser.add_argument("--out", type=Path, help="results dir (kept); default: a temp dir")
    parser.add_argument("--memory", default="2G", help="guest memory (default 2G)")
    parser.add_argument("--cpus", type=int, default=1, help="guest CPUs (1 is fastest)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds for the whole boot")
    parser.add_argument("command", nargs="*", help="command to run in the guest (after --)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("ipvs-vm: must run as root")
    started = time.monotonic()
    ensure_debs()
    vmlinuz, version = ensure_kernel(args.cache)
    out = (args.out or Path(tempfile.mkdtemp(prefix="piranha-ipvs-vm-", dir="/tmp"))).resolve()
    if str(out).startswith(HIDDEN_IN_GUEST):
        sys.exit(f"ipvs-vm: --out {out}: the guest mounts its own tmpfs there; use /tmp/...")
    out.mkdir(parents=True, exist_ok=True)
    count = build_pack(out)
    compile_project()
    command = args.command or default_command(out)
    (out / "guest.sh").write_text(GUEST_SH.format(
        out=shlex.quote(str(out)), repo=shlex.quote(str(REPO)),
        modules=" ".join(MODULES), command=shlex.join(command),
    ))
    log(f"kernel {version}, pack of {count} paths, booting ({time.monotonic() - started:.1f} s)")
    code = boot(vmlinuz, out, args)
    if not args.command:
        summarize_junit(out / "junit.xml")
    log(f"exit code {code}, wall time {time.monotonic() - started:.1f} s, results in {out}")
    if args.out is None:
        for name in ("pack.tar", "pack.list", "pack.libs", "pack.binds"):
            (out / name).unlink(missing_ok=True)
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        sys.exit(f"ipvs-vm: {shlex.join(map(str, exc.cmd))} failed (exit {exc.returncode})")
