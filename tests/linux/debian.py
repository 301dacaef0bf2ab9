"""Debian packages without installing them: resolve, `apt-get download`, unpack.

A .deb is an ar archive (`debian-binary`, `control.tar.*`, `data.tar.*`); its
data member is a tar compressed with xz, zstd, gzip, bzip2 or nothing
(deb(5)). Unpacking is done here in Python, not by dpkg, so that no root and
no dpkg database are needed: the files land where the caller says.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

AR_MAGIC = b"!<arch>\n"
AR_HEADER_SIZE = 60  # name 16, mtime 12, uid 6, gid 6, mode 8, size 10, fmag 2


class DebianError(Exception):
    """A package could not be resolved, fetched or unpacked."""


class PackageUnavailable(DebianError):
    """apt cannot give us the package (unknown, no network, no apt at all)."""


@dataclass(frozen=True)
class PackageInfo:
    """One version of a package, as `apt-cache show` describes it."""

    name: str
    version: str
    depends: tuple[str, ...]  # package names only, first alternative of each
    sha256: str | None
    size: int | None
    architecture: str = "amd64"  # "all" for linux-source-6.1


def run_apt(args: list[str], cwd: Path | None = None, echo: bool = False) -> str:
    """Run an apt command; its output, or PackageUnavailable saying why not."""
    if shutil.which(args[0]) is None:
        raise PackageUnavailable(f"{args[0]} is not installed (not a Debian-based host?)")
    # Echoed, apt's progress goes to our stderr: stdout is for results.
    result = subprocess.run(
        args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr if echo else subprocess.PIPE,
        stderr=None if echo else subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout or "").strip().splitlines()
        reason = output[-1] if output else f"exit status {result.returncode}"
        raise PackageUnavailable(f"{' '.join(args)}: {reason}")
    return result.stdout or ""


def parse_depends(field: str) -> tuple[str, ...]:
    """`a (= 1), b | c` -> ('a', 'b'): names only, first alternative of each."""
    names = []
    for clause in field.split(","):
        first = clause.split("|")[0].strip()
        if first:
            names.append(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return tuple(names)


def parse_control(text: str) -> dict[str, str]:
    """The first stanza of deb822 text (control file, `apt-cache show`)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t" and key is not None:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def show_package(name: str, update_if_unknown: bool = True) -> PackageInfo:
    """The candidate version of `name`, from the local apt lists.

    On a fresh machine the lists may be empty; as root, one `apt-get update`
    is tried before giving up.
    """
    try:
        text = run_apt(["apt-cache", "show", "--no-all-versions", name])
    except PackageUnavailable:
        if not (update_if_unknown and os.geteuid() == 0):
            raise
        run_apt(["apt-get", "update", "-qq"])
        return show_package(name, update_if_unknown=False)
    fields = parse_control(text)
    if "Version" not in fields:
        raise PackageUnavailable(f"apt-cache show {name}: no version")
    return PackageInfo(
        name=fields.get("Package", name),
        version=fields["Version"],
        depends=parse_depends(fields.get("Depends", "")),
        sha256=fields.get("SHA256"),
        size=int(fields["Size"]) if fields.get("Size", "").isdigit() else None,
        architecture=fields.get("Architecture", "amd64"),
    )


def resolve_image_package(meta: str) -> PackageInfo:
    """A kernel meta-package (`linux-image-cloud-amd64`) -> the real image package."""
    info = show_package(meta)
    for dependency in info.depends:
        if dependency.startswith("linux-image-") and dependency != meta:
            return show_package(dependency)
    raise PackageUnavailable(f"{meta} {info.version} depends on no linux-image package")


def deb_file_name(info: PackageInfo) -> str:
    """The name `apt-get download` gives the file (an epoch's ':' as '%3a')."""
    return f"{info.name}_{info.version.replace(':', '%3a')}_{info.architecture}.deb"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(info: PackageInfo, directory: Path, echo: bool = False) -> Path:
    """`apt-get download NAME=VERSION` into `directory` (kept: a cache).

    A file already there with the archive's SHA256 is not fetched again.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / deb_file_name(info)
    if path.exists() and _matches(path, info):
        return path
    args = ["apt-get", "download", "-q", f"{info.name}={info.version}"]
    if os.geteuid() == 0:
        # As root apt drops to the _apt user to download, which cannot write
        # to a root-owned cache: it says so and downloads as root anyway.
        args[1:1] = ["-o", "APT::Sandbox::User=root"]
    run_apt(args, cwd=directory, echo=echo)
    if not path.exists():
        raise PackageUnavailable(f"apt-get download {info.name}: no {path.name} afterwards")
    if not _matches(path, info):
        path.unlink()
        raise DebianError(f"{path.name}: SHA256 differs from the archive's {info.sha256}")
    return path


def _matches(path: Path, info: PackageInfo) -> bool:
    return info.sha256 is None or sha256_file(path) == info.sha256


# ---------------------------------------------------------------- unpacking


def ar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each member of a common ar archive (deb(5), ar(5))."""
    if not data.startswith(AR_MAGIC):
        raise DebianError("not an ar archive (no !<arch> magic)")
    offset = len(AR_MAGIC)
    while offset < len(data):
        header = data[offset : offset + AR_HEADER_SIZE]
        if len(header) < AR_HEADER_SIZE or header[58:60] != b"`\n":
            raise DebianError(f"bad ar member header at offset {offset}")
        name = header[0:16].decode("ascii").rstrip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        start = offset + AR_HEADER_SIZE
        if start + size > len(data):
            raise DebianError(f"ar member {name} runs past the end of the archive")
        yield name, data[start : start + size]
        offset = start + size + (size & 1)  # members are 2-aligned


def open_compressed(name: str, blob: bytes) -> io.BufferedIOBase:
    """A readable stream of the decompressed member `name` (data.tar.xz...)."""
    stream = io.BytesIO(blob)
    if name.endswith(".tar"):
        return stream
    if name.endswith(".xz"):
        return lzma.LZMAFile(stream)
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=stream)
    if name.endswith(".bz2"):
        return bz2.BZ2File(stream)
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError as error:  # pragma: no cover - a test dependency
            raise DebianError(
                f"{name} is zstd-compressed: pip install zstandard (a test dependency)"
            ) from error
        return zstandard.ZstdDecompressor().stream_reader(stream)  # type: ignore[return-value]
    raise DebianError(f"unknown compression of .deb member {name}")


def data_tar(deb: bytes) -> tarfile.TarFile:
    """The data.tar.* of a .deb, open for streaming ('r|')."""
    for name, blob in ar_members(deb):
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=open_compressed(name, blob), mode="r|")
    raise DebianError("no data.tar member in the .deb")


def extract_files(deb_path: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The regular files of a .deb's data whose path (no leading ./) `wanted` accepts."""
    found: dict[str, bytes] = {}
    with data_tar(deb_path.read_bytes()) as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if member.isfile() and wanted(name):
                stream = archive.extractfile(member)
                assert stream is not None
                found[name] = stream.read()
    return found
