"""The kernels the Linux tests and benchmarks boot, made from Debian's packages.

Two kernels, both cached under `$XDG_CACHE_HOME/pyvmm/linux` (see cache.py):

- **stock**: Debian's `linux-image-cloud-amd64`, the meta-package resolved
  to the real image package (`linux-image-6.1.0-NN-cloud-amd64`), fetched
  with `apt-get download` and unpacked in Python; its bzImage
  (/boot/vmlinuz-*) and the vmlinux ELF taken out of it (bzimage.py).
- **tiny**: built from Debian's `linux-source-6.1` with `make tinyconfig`
  and the fragment guests/linux/tiny-x86_64.config, keyed by the hash of the
  fragment, the source's version and this recipe; bzImage and vmlinux.

And the initramfs, from initramfs.py. By hand:

    python -m tests.linux.kernels --all         # everything, with progress
    python -m tests.linux.kernels --stock       # or one piece
    python -m tests.linux.kernels --initramfs --command 'uname -a' --shell

This module is test tooling, not part of pyvmm: it runs apt-get and make,
which the library never does, and pyvmm boots whatever kernel it is given.
Benchmarks run from the checkout import it as `tests.linux.kernels`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.linux import bzimage, debian
from tests.linux.cache import (
    QUIET,
    Progress,
    cache_root,
    locked,
    read_json,
    size_text,
    write_atomic,
    write_json,
)
from tests.linux.initramfs import DEFAULT_COMMANDS, Initramfs, build_initramfs

REPO = Path(__file__).resolve().parents[2]
STOCK_PACKAGE = "linux-image-cloud-amd64"
SOURCE_PACKAGE = "linux-source-6.1"
SOURCE_TARBALL = Path("/usr/src") / f"{SOURCE_PACKAGE}.tar.xz"
TINY_CONFIG = REPO / "guests" / "linux" / "tiny-x86_64.config"
# Bump when the build recipe below changes what comes out of the same inputs.
TINY_RECIPE = 1

# What building a kernel needs besides gcc and make: (program or header, package).
BUILD_NEEDS = (
    ("make", "make"),
    ("gcc", "gcc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("/usr/include/libelf.h", "libelf-dev"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
)


class KernelError(Exception):
    """A kernel could not be fetched, extracted or built (not: no package)."""


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot, and what it took to make it."""

    name: str  # "stock" or "tiny"
    version: str  # the package version it came from
    release: str  # uname -r
    bzimage: Path
    vmlinux: Path
    config: Path
    manifest: dict


# -------------------------------------------------------------------- stock


def stock_kernel(progress: Progress = QUIET, root: Path | None = None) -> Kernel:
    """Debian's cloud kernel: its bzImage and the vmlinux taken out of it."""
    root = root or cache_root()
    info = debian.resolve_image_package(STOCK_PACKAGE)
    directory = root / "stock" / f"{info.name}_{info.version.replace(':', '_')}"
    with locked(root / "stock.lock"):
        manifest = read_json(directory / "manifest.json")
        if manifest is None:
            manifest = _make_stock(info, directory, root, progress)
    return _kernel("stock", directory, manifest)


def _make_stock(info: debian.PackageInfo, directory: Path, root: Path, progress: Progress) -> dict:
    times: dict[str, float] = {}
    with progress.step(f"downloading {info.name} {info.version}", times, "download_s"):
        deb = debian.download(info, root / "debs", echo=progress.echo_commands)
    with progress.step(f"unpacking {deb.name}", times, "unpack_s"):
        files = debian.extract_files(
            deb, lambda name: name.startswith(("boot/vmlinuz-", "boot/config-"))
        )
    images = [name for name in files if name.startswith("boot/vmlinuz-")]
    if len(images) != 1:
        raise KernelError(f"{deb.name}: expected one boot/vmlinuz-*, found {images}")
    release = images[0].removeprefix("boot/vmlinuz-")
    image = files[images[0]]
    with progress.step(f"extracting vmlinux from vmlinuz-{release}", times, "extract_s"):
        extracted = bzimage.extract_vmlinux(image)
    write_atomic(directory / "bzImage", image)
    write_atomic(directory / "vmlinux", extracted.vmlinux)
    write_atomic(directory / "config", files.get(f"boot/config-{release}", b""))
    manifest = {
        "package": info.name,
        "meta_package": STOCK_PACKAGE,
        "version": info.version,
        "release": release,
        "deb_bytes": deb.stat().st_size,
        "bzimage_bytes": len(image),
        "boot_protocol": f"{extracted.header.version >> 8}.{extracted.header.version & 0xFF:02d}",
        "kernel_version_string": extracted.header.kernel_version,
        "compression": extracted.compression,
        "payload_bytes": extracted.payload_size,
        "uncompressed_bytes": extracted.uncompressed_size,
        "vmlinux_bytes": len(extracted.vmlinux),
        "entry": hex(extracted.elf.entry),
        "pvh_entry": hex(extracted.elf.pvh_entry) if extracted.elf.pvh_entry else None,
        "times": times,
    }
    write_json(directory / "manifest.json", manifest)
    progress.say(
        f"stock {release}: bzImage {size_text(len(image))} ({extracted.compression}), "
        f"vmlinux {size_text(len(extracted.vmlinux))}"
    )
    return manifest


def _kernel(name: str, directory: Path, manifest: dict) -> Kernel:
    return Kernel(
        name=name,
        version=manifest["version"],
        release=manifest["release"],
        bzimage=directory / "bzImage",
        vmlinux=directory / "vmlinux",
        config=directory / "config",
        manifest=manifest,
    )


# --------------------------------------------------------------------- tiny


def config_lines(fragment: str) -> list[str]:
    """The settings of a config fragment: `CONFIG_X=y` and `# CONFIG_X is not set`."""
    lines = []
    for line in fragment.splitlines():
        line = line.strip()
        if line.startswith("CONFIG_") or re.fullmatch(r"# CONFIG_\w+ is not set", line):
            lines.append(line)
    return lines


def dropped_settings(fragment: str, final: str) -> list[str]:
    """The fragment's settings that the final .config does not have (Kconfig dropped them)."""
    have = set(final.splitlines())
    dropped = []
    for line in config_lines(fragment):
        if line in have:
            continue
        name = re.search(r"CONFIG_\w+", line)
        assert name is not None
        if line.endswith("is not set") and not any(
            other.startswith(name.group() + "=") for other in have
        ):
            continue  # "not set" and absent (its menu is off) mean the same
        dropped.append(line)
    return dropped


def tiny_key(fragment: bytes, source_version: str) -> str:
    digest = hashlib.sha256()
    for part in (str(TINY_RECIPE).encode(), source_version.encode(), fragment):
        digest.update(part + b"\0")
    return digest.hexdigest()[:16]


def missing_build_tools() -> list[str]:
    """The Debian packages to install before the kernel can be built."""
    return [
        package
        for need, package in BUILD_NEEDS
        if not (Path(need).exists() if need.startswith("/") else shutil.which(need))
    ]


def ensure_build_tools(progress: Progress) -> None:
    missing = missing_build_tools()
    if not missing:
        return
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        raise KernelError(f"building a kernel needs: {' '.join(command)} (as root)")
    progress.say(f"installing {' '.join(missing)}")
    debian.run_apt(["apt-get", "update", "-qq"])
    debian.run_apt(command, echo=progress.echo_commands)


def source_version() -> tuple[debian.PackageInfo, bool]:
    """The linux-source package to build, and whether it is installed already."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Status}\t${Version}", SOURCE_PACKAGE],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:  # no dpkg: show_package says what apt cannot do
        return debian.show_package(SOURCE_PACKAGE), False
    status, _, version = result.stdout.partition("\t")
    if result.returncode == 0 and status.endswith(" installed") and SOURCE_TARBALL.exists():
        return debian.PackageInfo(SOURCE_PACKAGE, version, (), None, None), True
    return debian.show_package(SOURCE_PACKAGE), False


def source_tree(
    info: debian.PackageInfo, installed: bool, root: Path, progress: Progress, times: dict
) -> Path:
    """The unpacked linux-source tree (kept: unpacking takes a while)."""
    tree = root / "src" / f"{SOURCE_PACKAGE}_{info.version.replace(':', '_')}"
    top = tree / SOURCE_PACKAGE
    if (tree / ".complete").exists():
        return top
    if installed:
        tarball = SOURCE_TARBALL
    else:
        with progress.step(f"downloading {info.name} {info.version}", times, "download_s"):
            deb = debian.download(info, root / "debs", echo=progress.echo_commands)
        with progress.step(f"taking the source tarball out of {deb.name}", times, "unpack_deb_s"):
            wanted = f"usr/src/{SOURCE_PACKAGE}.tar.xz"
            files = debian.extract_files(deb, lambda name: name == wanted)
            if wanted not in files:
                raise KernelError(f"{deb.name} has no {wanted}")
            tarball = root / "src" / f"{SOURCE_PACKAGE}_{info.version}.tar.xz"
            write_atomic(tarball, files[wanted])
            del files
            deb.unlink()  # 139 MB; the unpacked tree is what is kept
    if tree.exists():
        shutil.rmtree(tree)  # a half-unpacked tree from an interrupted run
    tree.mkdir(parents=True)
    with progress.step(
        f"unpacking {tarball.name} ({size_text(tarball.stat().st_size)})", times, "unpack_source_s"
    ):
        # tar(1) rather than tarfile: 80,000 files, several times faster.
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(tree)], check=True)
    if not installed:
        tarball.unlink()
    if not (top / "Makefile").exists():
        raise KernelError(f"{tarball.name} did not unpack to {SOURCE_PACKAGE}/")
    (tree / ".complete").touch()
    return top


def make(
    source: Path,
    build: Path,
    targets: Sequence[str],
    log: Path,
    progress: Progress,
    jobs: int | None = None,
) -> None:
    """`make O=build targets`, its output in `log`, a progress line every 15 s."""
    command = [
        "make",
        "-C",
        str(source),
        f"O={build}",
        f"-j{jobs or os.cpu_count() or 2}",
        *targets,
    ]
    start = last = time.monotonic()
    count, latest = 0, ""
    with log.open("a") as record:
        record.write("$ " + " ".join(command) + "\n")
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        for line in process.stdout:
            record.write(line)
            count += 1
            if line.startswith("  ") and line.split()[0].isupper():
                latest = line.strip()
            if time.monotonic() - last >= 15:
                last = time.monotonic()
                progress.say(f"make: {time.monotonic() - start:.0f} s, {count} lines, {latest}")
        status = process.wait()
    if status != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise KernelError(f"make {' '.join(targets)} failed (status {status}); see {log}\n{tail}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tiny_kernel(
    progress: Progress = QUIET,
    root: Path | None = None,
    fragment_path: Path = TINY_CONFIG,
    jobs: int | None = None,
) -> Kernel:
    """The small kernel, built once per configuration and source version."""
    root = root or cache_root()
    fragment = fragment_path.read_bytes()
    info, installed = source_version()
    key = tiny_key(fragment, info.version)
    directory = root / "tiny" / key
    with locked(root / "tiny.lock"):
        manifest = read_json(directory / "manifest.json")
        if manifest is None:
            manifest = _build_tiny(info, installed, fragment, key, directory, root, progress, jobs)
    return _kernel("tiny", directory, manifest)


def _build_tiny(
    info: debian.PackageInfo,
    installed: bool,
    fragment: bytes,
    key: str,
    directory: Path,
    root: Path,
    progress: Progress,
    jobs: int | None,
) -> dict:
    times: dict[str, float] = {}
    ensure_build_tools(progress)
    source = source_tree(info, installed, root, progress, times)
    build = root / "tiny" / f"{key}.build"
    # Under the lock no other build runs: any build tree left is an interrupted one's.
    for stale in (root / "tiny").glob("*.build"):
        shutil.rmtree(stale)
    build.mkdir(parents=True)
    log = build / "build.log"
    with progress.step("configuring: tinyconfig + the fragment", times, "configure_s"):
        make(source, build, ["tinyconfig"], log, progress, jobs)
        # As tinyconfig applies tiny.config: allnoconfig with KCONFIG_ALLCONFIG
        # (Documentation/kbuild/kconfig.rst), so options the fragment makes
        # visible stay off unless it turns them on (olddefconfig would give
        # them their defaults: ACPI's submenu, VT, input...).
        allconfig = build / "pyvmm-allconfig"
        allconfig.write_bytes((build / ".config").read_bytes() + fragment)
        make(source, build, [f"KCONFIG_ALLCONFIG={allconfig}", "allnoconfig"], log, progress, jobs)
    final = (build / ".config").read_text()
    dropped = dropped_settings(fragment.decode(), final)
    if dropped:
        raise KernelError(
            "the configuration lost settings of guests/linux/tiny-x86_64.config "
            f"(a dependency is off): {', '.join(dropped)}"
        )
    cpu_before = _children_cpu()
    with progress.step(
        f"building bzImage and vmlinux (make -j{jobs or os.cpu_count()})", times, "build_s"
    ):
        make(source, build, ["bzImage", "vmlinux"], log, progress, jobs)
    # CPU seconds too: the wall time depends on what else the machine runs.
    times["build_cpu_s"] = round(_children_cpu() - cpu_before, 1)
    vmlinux = (build / "vmlinux").read_bytes()
    elf = bzimage.check_linux_elf(vmlinux)
    image = (build / "arch/x86/boot/bzImage").read_bytes()
    header = bzimage.read_setup_header(image)
    release = (build / "include/config/kernel.release").read_text().strip()
    staging = root / "tiny" / f"{key}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    shutil.copy(build / "arch/x86/boot/bzImage", staging / "bzImage")
    shutil.copy(build / "vmlinux", staging / "vmlinux")
    shutil.copy(build / ".config", staging / "config")
    shutil.copy(build / "System.map", staging / "System.map")
    shutil.copy(log, staging / "build.log")
    manifest = {
        "source_package": info.name,
        "version": info.version,
        "release": release,
        "config_key": key,
        "fragment": "guests/linux/tiny-x86_64.config",
        "bzimage_bytes": len(image),
        "vmlinux_bytes": len(vmlinux),
        "boot_protocol": f"{header.version >> 8}.{header.version & 0xFF:02d}",
        "kernel_version_string": header.kernel_version,
        "entry": hex(elf.entry),
        "pvh_entry": hex(elf.pvh_entry) if elf.pvh_entry else None,
        "jobs": jobs or os.cpu_count(),
        "times": times,
    }
    write_json(staging / "manifest.json", manifest)
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    shutil.rmtree(build)  # the objects: a new configuration is a new build anyway
    progress.say(
        f"tiny {release}: bzImage {size_text(len(image))}, vmlinux {size_text(len(vmlinux))}, "
        f"built in {times['build_s']:.0f} s"
    )
    return manifest


# ---------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.linux.kernels",
        description="Fetch and build the Linux kernels and initramfs pyvmm's tests boot, "
        f"into {cache_root()}.",
    )
    parser.add_argument("--all", action="store_true", help="all of the below (the default)")
    parser.add_argument("--stock", action="store_true", help=f"Debian's {STOCK_PACKAGE}")
    parser.add_argument("--tiny", action="store_true", help="the small kernel, built here")
    parser.add_argument("--initramfs", action="store_true", help="a busybox initramfs")
    parser.add_argument(
        "--command",
        action="append",
        metavar="CMD",
        help=f"a command for /init to run (repeatable; default: {'; '.join(DEFAULT_COMMANDS)})",
    )
    parser.add_argument("--shell", action="store_true", help="/init ends in a shell, not power-off")
    parser.add_argument("--gzip", action="store_true", help="a gzip-compressed initramfs")
    parser.add_argument("-j", "--jobs", type=int, help="make's jobs (default: the CPU count)")
    args = parser.parse_args(argv)
    everything = args.all or not (args.stock or args.tiny or args.initramfs)
    progress = Progress()
    kernels: list[Kernel] = []
    initramfs: Initramfs | None = None
    try:
        if everything or args.initramfs:
            commands = DEFAULT_COMMANDS if args.command is None else args.command
            initramfs = build_initramfs(commands, args.shell, args.gzip, progress)
            print(f"initramfs  {initramfs.path}  ({size_text(initramfs.size)})")
        if everything or args.stock:
            kernels.append(stock_kernel(progress))
        if everything or args.tiny:
            kernels.append(tiny_kernel(progress, jobs=args.jobs))
    except (debian.DebianError, bzimage.KernelImageError, KernelError) as error:
        print(f"python -m tests.linux.kernels: {error}", file=sys.stderr)
        return 1
    for kernel in kernels:
        print(f"{kernel.name:<6} {kernel.release}  ({kernel.version})")
        print(f"  vmlinux  {kernel.vmlinux}  ({size_text(kernel.vmlinux.stat().st_size)})")
        print(f"  bzImage  {kernel.bzimage}  ({size_text(kernel.bzimage.stat().st_size)})")
        print(f"  times    {kernel.manifest['times']}")
        if initramfs:
            print(
                f"  boot     pyvmm boot {kernel.vmlinux} --initrd {initramfs.path} "
                "--append console=ttyS0"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
