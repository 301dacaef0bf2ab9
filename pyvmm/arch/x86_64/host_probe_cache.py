"""The host probe's findings, kept once per host kernel and KVM backend.

The probe (host_probe.py) answers the same on every run of the same host
kernel, so its findings are kept in the user's cache directory, never in
the checkout: `$XDG_CACHE_HOME/pyvmm` (an absolute XDG_CACHE_HOME only, as
the XDG Base Directory Specification says), else `~/.cache/pyvmm`. A file
is named after a digest of its key (kernel release, kernel version string,
KVM backend), so that hosts sharing a home directory keep one file each; a
file that does not parse, is of another format, or holds another key is
ignored, and the next probe writes it anew. Writes go to a temporary file
first and are renamed into place: a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from pyvmm.arch.x86_64.host_findings import (
    FORMAT,
    BadFindings,
    HostFindings,
    HostKey,
    findings_from_json,
    findings_to_json,
)

CACHE_SUBDIRECTORY = "pyvmm"


def cache_directory(environ: dict[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/pyvmm` when XDG_CACHE_HOME is an absolute path, else `~/.cache/pyvmm`."""
    environ = dict(os.environ) if environ is None else environ
    base = environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        home = environ.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".cache")
    return Path(base) / CACHE_SUBDIRECTORY


def cache_file(key: HostKey, directory: Path) -> Path:
    """The file for `key` in `directory`: host-probe-<16 hex digits of its digest>.json."""
    text = json.dumps({"format": FORMAT, **asdict(key)}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return directory / f"host-probe-{digest}.json"


def load_findings(key: HostKey, directory: Path) -> HostFindings | None:
    """The findings kept for `key`, or None: no file, or one that is unreadable, corrupt,
    of another format or another host."""
    try:
        text = cache_file(key, directory).read_text()
        findings = findings_from_json(json.loads(text))
    except (OSError, UnicodeDecodeError, ValueError, BadFindings):
        return None
    return findings if findings.key == key else None


def store_findings(findings: HostFindings, directory: Path) -> Path:
    """Write `findings` for their key (atomically); the file's path. Raises OSError."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = cache_file(findings.key, directory)
    descriptor, temporary = tempfile.mkstemp(prefix=".host-probe-", dir=directory)
    try:
        with os.fdopen(descriptor, "w") as stream:
            json.dump(findings_to_json(findings), stream, indent=1)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path
