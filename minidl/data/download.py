"""Getting a data set's archive: download it atomically, check its MD5, extract it safely.

Written for CIFAR-10's archive (``cifar10.download_and_extract`` strings these together)
and usable for any other:

* ``download_file`` writes to a temporary file beside the destination and renames it
  into place only when complete, so an interrupted download never leaves a half file
  under the final name; network failures become one ``DatasetError`` that says what to
  do instead.
* ``verify_md5`` deletes a file whose checksum is wrong, so that the next run downloads
  it afresh instead of failing on it again.
* ``safe_extract`` checks every member of a tar archive before writing anything: no
  links, devices, absolute paths or ``..`` that would land outside the target.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .errors import DatasetError

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``~/.cache/minidl``: where archives are downloaded and extracted by default."""
    return Path.home() / ".cache" / "minidl"


# ---- download and checksum ---------------------------------------------------
def file_md5(path) -> str:
    """Hex MD5 of a file, read in chunks so large archives need little memory."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path, md5: str | None) -> None:
    """Check a file's MD5; on a mismatch delete the file and raise DatasetError.

    ``md5=None`` skips the check. The bad file is deleted so the next run downloads
    a fresh copy instead of failing again on the same file.
    """
    if md5 is None:
        return
    actual = file_md5(path)
    if actual.lower() != md5.lower():
        Path(path).unlink(missing_ok=True)
        raise DatasetError(f"MD5 mismatch for {path}: expected {md5.lower()}, got {actual}; the file was deleted "
                           "(a truncated or tampered download), run again to download it afresh")


def _progress_bar(total: int | None, label: str, enabled: bool):
    """A tqdm bar when tqdm is installed and progress is wanted, else None."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: say what is happening, once
        size = f" ({total / 1e6:.0f} MB)" if total else ""
        print(f"downloading {label}{size} ...", file=sys.stderr)
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=label)


def download_file(url: str, dest, timeout: float = 30, progress: bool = True,
                  data_dir_hint: str = "pass --data-dir pointing at a copy on disk") -> Path:
    """Download ``url`` to ``dest`` atomically.

    The bytes go to a temporary file next to ``dest`` that is renamed onto ``dest``
    only when complete, so an interrupted download never leaves a half file under
    the final name. ``data_dir_hint`` ends the network errors' messages: how to use
    a copy already on disk instead.

    Raises:
        DatasetError: naming the URL and the reason, on any network error, a
            timeout, or fewer bytes than the server announced.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    bar = None
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = _progress_bar(total, dest.name, progress)
            received = 0
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DatasetError(f"could not download {url}: got {received} of {total} bytes (connection dropped); "
                               f"run again, or {data_dir_hint}")
        os.replace(tmp_name, dest)
    except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError) as exc:
        # HTTPError's str has the status code; URLError's reason is the socket error
        reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", None) or exc
        raise DatasetError(f"could not download {url}: {reason}; check the network connection, "
                           f"or {data_dir_hint}") from None
    except OSError as exc:  # the local side: disk full, permissions
        raise DatasetError(f"could not save {url} to {dest}: {exc}") from None
    finally:
        if bar is not None:
            bar.close()
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return dest


# ---- safe extraction ---------------------------------------------------------
def _check_member(member: tarfile.TarInfo, root: str) -> None:
    """Refuse members that are not plain files/directories or would land outside ``root``."""
    if not (member.isfile() or member.isdir()):
        kind = "link" if (member.issym() or member.islnk()) else "device or special file"
        raise DatasetError(f"unsafe archive: member {member.name!r} is a {kind}; refusing to extract")
    target = os.path.realpath(os.path.join(root, member.name))
    if os.path.commonpath([root, target]) != root:
        raise DatasetError(f"unsafe archive: member {member.name!r} would be written outside {root}; "
                           "refusing to extract")


def safe_extract(archive, target_dir) -> Path:
    """Extract a .tar.gz into ``target_dir``, refusing anything unsafe.

    Every member is checked before anything is written: a member whose resolved
    path escapes ``target_dir`` (``../x``, an absolute path), a symbolic or hard
    link, or a device/FIFO raises DatasetError naming that member, and then nothing
    has been extracted.

    Returns:
        the target directory.
    """
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(target_dir)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, root)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own checks too
                tar.extractall(root, members=members, filter="data")
            else:
                tar.extractall(root, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"could not extract {archive}: {exc}; delete it and run again to download it afresh") \
            from None
    return target_dir
