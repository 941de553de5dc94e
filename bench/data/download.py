"""`bench data download` and `bench data check`: fetch the public HC18 release, validate any release.

Only HC18 may be downloaded by the tool (CC BY 4.0, public Zenodo record). CAMUS and ACDC need a
registration, so their command says where to register and which layout to unpack into.

A download goes to ``<data_root>/hc18/.bench/downloads/<file>.part``; an interrupted one resumes from
there with an HTTP Range request, and a file is only used once its MD5 matches the record's.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bench.data.inventory import folder_is_writable
from bench.data.release import ReleaseDataset
from bench.errors import BenchError
from bench.registry import DATASETS

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60
SHOWN_IDS = 20  # ids named per structure by `bench data check`; records carry them all


@dataclass(frozen=True)
class RemoteFile:
    """One file of a public record: where it is, its published MD5, and whether it is a zip to unpack."""

    url: str
    name: str
    md5: str
    unpack: bool = False


# Zenodo record 1327317 (DOI 10.5281/zenodo.1327317), the HC18 training set. The MD5s are the ones the
# record lists for its files (training_set.zip: 132,926,838 bytes; the CSV: 33,688 bytes).
HC18_RECORD = "https://zenodo.org/records/1327317"
HC18_FILES = (
    RemoteFile(
        f"{HC18_RECORD}/files/training_set.zip?download=1",
        "training_set.zip",
        "00eb8198b9a505b2b3a6dfc740382497",
        unpack=True,
    ),
    RemoteFile(
        f"{HC18_RECORD}/files/training_set_pixel_size_and_HC.csv?download=1",
        "training_set_pixel_size_and_HC.csv",
        "c0761518fece2bd2d2ad4218f2cd9777",
    ),
)

# Both releases are served by CREATIS's Human Heart Project database (the seed paper's footnote), one
# collection each; the old challenge pages now point there too.
HUMAN_HEART_DATABASE = "https://humanheart-project.creatis.insa-lyon.fr/database/"
REGISTRATION = {
    "camus": (
        f"Get CAMUS from the Human Heart Project database of CREATIS: {HUMAN_HEART_DATABASE}"
        "#collection/6373703d73e9f0047faa1bc8 (the collection page: create an account there, then download "
        "the release). Licence: the terms stated on that page. Cite S. Leclerc et al., "
        '"Deep Learning for Segmentation using an Open Large-Scale Dataset in 2D Echocardiography", IEEE '
        "Transactions on Medical Imaging 38(9), 2198–2210, 2019."
    ),
    "acdc": (
        f"Get ACDC from the Human Heart Project database of CREATIS: {HUMAN_HEART_DATABASE}"
        "#collection/637218c173e9f0047faa00fb (the collection page: create an account there, then download "
        "the release; it unpacks to database/training/ and database/testing/). Licence: CC BY-NC-SA 4.0. "
        'Every use must cite O. Bernard et al., "Deep Learning Techniques for Automatic MRI Cardiac '
        'Multi-structures Segmentation and Diagnosis: Is the Problem Solved?", IEEE Transactions on Medical '
        "Imaging 37(11), 2514–2525, 2018."
    ),
}


def _say(console: Console, text: str) -> None:
    """One message, never re-wrapped (paths stay copyable) and not syntax-highlighted."""
    console.print(text, highlight=False, soft_wrap=True)


def release_plugin(dataset: str, data_root: Path | None) -> ReleaseDataset | None:
    """The plugin of ``dataset`` for ``data_root``; None for a dataset that has no release (synthetic)."""
    plugin = DATASETS.get(dataset)(data_root)
    return plugin if isinstance(plugin, ReleaseDataset) else None


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(remote: RemoteFile, destination: Path, progress: Progress) -> None:
    """Download ``remote`` to ``destination``, resuming ``destination.part``, and verify its MD5."""
    if destination.exists() and md5_of(destination) == remote.md5:
        return
    partial = destination.with_name(destination.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    request = urllib.request.Request(remote.url, headers=headers)
    host = urllib.parse.urlsplit(remote.url).netloc
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        # 416: the range starts at the end of the file, so the partial file is already complete
        if not (error.code == 416 and have):
            raise BenchError(
                f"downloading {remote.name} from {host} failed: HTTP {error.code} {error.reason}"
            ) from error
        response = None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise BenchError(
            f"cannot reach {host} to download {remote.name} ({reason}); check the connection"
        ) from error
    if response is not None:
        with response:
            _receive(response, partial, have, remote.name, progress)
    actual = md5_of(partial)
    if actual != remote.md5:
        partial.unlink()
        raise BenchError(
            f"{remote.name} has MD5 {actual}, not the published {remote.md5}; the damaged file was "
            "deleted, run the command again"
        )
    partial.replace(destination)


def _receive(response, partial: Path, have: int, name: str, progress: Progress) -> None:
    """Append the response body to ``partial`` (or rewrite it, when the server ignored the range)."""
    resumed = have > 0 and response.status == 206
    if not resumed:  # the server sends the whole file: start again from the first byte
        have = 0
    length = response.headers.get("Content-Length")
    total = have + int(length) if length is not None else None
    task = progress.add_task(name, total=total, completed=have)
    interrupted = f"the download of {name} was interrupted; run the same command again to resume it"
    try:
        with partial.open("ab" if resumed else "wb") as out:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                progress.advance(task, len(chunk))
    except (OSError, http.client.HTTPException) as error:
        raise BenchError(f"{interrupted} ({type(error).__name__})") from error
    # http.client ends a body cut short by a closed connection without an error; the length tells
    if total is not None and partial.stat().st_size < total:
        raise BenchError(f"{interrupted} ({partial.stat().st_size} of {total} bytes received)")


def _hc18_present(plugin) -> bool:
    """Whether the release is already there, by the loader's own rules (the CSV may sit inside the folder)."""
    try:
        plugin.csv_path()
    except BenchError:
        return False
    return any((plugin.folder / "training_set").glob("*_HC.png"))


def download_hc18(data_root: Path | None, console: Console) -> Path:
    """Download, verify and unpack the HC18 training set into ``<data_root>/hc18``; returns that folder."""
    plugin = DATASETS.get("hc18")(data_root)
    folder = plugin.folder
    if _hc18_present(plugin):
        _say(console, f"HC18 is already in {folder}; nothing to download.")
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BenchError(
            f"cannot create '{folder}' ({error.strerror}); choose another --data-root"
        ) from error
    if not folder_is_writable(plugin.own_folder):
        raise BenchError(f"'{folder}' is not writable; choose another --data-root")
    downloads = plugin.own_folder / "downloads"
    downloads.mkdir(exist_ok=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        for remote in HC18_FILES:
            fetch(remote, downloads / remote.name, progress)
    for remote in HC18_FILES:
        fetched = downloads / remote.name
        if remote.unpack:
            _unpack(fetched, folder, plugin.own_folder)
            fetched.unlink()
        else:
            fetched.replace(folder / remote.name)  # the downloads folder is inside the release folder
    _say(console, f"HC18 training set ready in {folder} (licence CC BY 4.0; cite van den Heuvel et al. 2018)")
    return folder


def _unpack(archive: Path, folder: Path, scratch: Path) -> None:
    """Unpack into a scratch folder first and move the result in, so no half-unpacked release is left."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix="unpack-") as temporary:
        try:
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(temporary)  # extractall drops absolute paths and '..' from member names
        except zipfile.BadZipFile as error:
            archive.unlink()
            raise BenchError(
                f"{archive.name} is not a valid zip ({error}); it was deleted, run again"
            ) from error
        for entry in sorted(Path(temporary).iterdir()):
            target = folder / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            shutil.move(str(entry), target)


def download(dataset: str, data_root: Path | None, console: Console) -> None:
    """Download a public release, or tell how to get one that needs a registration."""
    plugin = release_plugin(dataset, data_root)
    if plugin is None:
        _say(console, f"'{dataset}' is generated on the fly; there is nothing to download.")
        return
    if plugin.release_name == "hc18":
        download_hc18(data_root, console)
        return
    _say(console, REGISTRATION.get(plugin.release_name, f"Get {plugin.display_name} from {plugin.homepage}."))
    _say(console, f"Then unpack it so that the layout is: {plugin.layout}")
    _say(console, f"with <data_root> = {plugin.data_root} (set it with --data-root or $BENCH_DATA).")
