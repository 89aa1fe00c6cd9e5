"""One-file model packages: a trained model and its model card, to share and to predict with.

``paseg export model RUN --out MODEL.zip`` writes one (:func:`export_model_package`), ``paseg show-model`` prints
its card (:func:`read_model_package`), and ``paseg predict MODEL.zip …`` predicts with it
(:func:`load_package_predictor`). A package is a zip archive of exactly these members:

* ``card.json`` — the model card (:mod:`PASegLib.interop.model_card`): networks, stage, target spacing (mm), patch
  ``[I, J, K]`` (voxels), annotation kinds, number of training cases, validation / benchmark Dice where known,
  PASeg and torch versions, date, the exporter's description; and the manifest ``members``: the size (bytes) and
  SHA-256 of every other member. No case identifiers, paths or patient data.
* ``config.json`` — the training configuration the weights predict with (``TrainConfig.to_dict``).
* ``model.pt`` — one PASeg checkpoint (:mod:`PASegLib.training.checkpoint`) holding only the selected network weights
  (the primary network; both networks of an SCM run for an ensemble package) and that configuration: no optimiser,
  random-generator or training-history state. It is loaded with ``torch.load(weights_only=True)``: nothing in a
  package is executed.

Reading refuses, naming the package and the member: a file that is not a zip archive; a member name that could
escape the extraction folder (``..``, an absolute path, a backslash, a drive letter); a symbolic link, a folder, an
encrypted or unknown member; a missing member; a zip bomb (declared sizes above :data:`MAX_MEMBER_BYTES`, or
uncompressed : compressed above :data:`MAX_RATIO`, checked from the headers before anything is extracted, and the
bytes counted again while reading); a card of another format version (:data:`FORMAT_VERSION`); a member whose size
or SHA-256 differs from the manifest (a tampered or damaged package). The SHA-256 manifest detects damage and
edits of one member; it is not a signature (whoever edits the weights can rewrite the card): share packages over
a channel you trust.

Importing this module imports neither torch nor the networks (reading a card needs neither); exporting and
loading import them when called.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, Optional, Sequence, Union

from PASegLib.utils.atomic import PathLike, atomic_path

__all__ = ["CARD", "CONFIG", "FORMAT_VERSION", "MEMBERS", "PACKAGE_FORMAT", "WEIGHTS", "ModelPackageError",
           "export_model_package", "extract_model_package", "is_model_package", "load_package_predictor",
           "read_model_package"]

#: The ``format`` marker of a package's ``card.json``.
PACKAGE_FORMAT = "paseg-model-package"
#: The package layout this PASeg writes and reads; a package of another version is refused.
FORMAT_VERSION = 1
CARD, CONFIG, WEIGHTS = "card.json", "config.json", "model.pt"
#: Every member of a package (nothing else may be in the archive).
MEMBERS = (CARD, CONFIG, WEIGHTS)
#: Largest uncompressed size (bytes) of each member, declared in the headers and counted while reading.
MAX_MEMBER_BYTES = {CARD: 1 << 20, CONFIG: 1 << 20, WEIGHTS: 2 << 30}
#: Largest uncompressed : compressed size ratio of a member (the weights are stored; JSON deflates about 5×).
MAX_RATIO = 50.0
_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelPackageError(ValueError):
    """A model package cannot be used: not a package, unsafe, damaged or tampered, or of another format version."""


def is_model_package(path: PathLike) -> bool:
    """Whether ``path`` is meant as a package rather than a run folder: a file, or a name ending in ``.zip``."""
    path = Path(path)
    return path.suffix.lower() == ".zip" or path.is_file()


# -- reading ---------------------------------------------------------------------------------------------------
def _unsafe_name(name: str) -> Optional[str]:
    """Why a member name could write outside the extraction folder (``None``: it cannot)."""
    if not name or "\x00" in name:
        return "an empty name or a NUL character"
    if "\\" in name:
        return "a backslash (a Windows path separator)"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if any(part in ("..", ".") for part in name.split("/")):
        return "a '..' or '.' path component"
    return None


def _check_headers(path: Path, archive: zipfile.ZipFile) -> Dict[str, zipfile.ZipInfo]:
    """The members by name, after every header check (names, kinds, sizes, ratios): nothing read yet."""
    infos = archive.infolist()
    members: Dict[str, zipfile.ZipInfo] = {}
    for info in infos[: len(MEMBERS) + 1]:
        for name in dict.fromkeys((info.orig_filename, info.filename)):
            why = _unsafe_name(name)
            if why is not None:
                raise ModelPackageError(f"{path}: unsafe member name {name!r} ({why}); the package is refused and "
                                        f"nothing was extracted")
        name = info.filename
        mode = info.external_attr >> 16
        if info.create_system == 3 and stat.S_ISLNK(mode):
            raise ModelPackageError(f"{path}: member {name!r} is a symbolic link; the package is refused")
        if info.is_dir() or name not in MEMBERS:
            raise ModelPackageError(f"{path}: unexpected member {name!r} (a package holds only "
                                    f"{', '.join(MEMBERS)}); the package is refused")
        if name in members:
            raise ModelPackageError(f"{path}: member {name!r} appears twice; the package is refused")
        if info.flag_bits & 0x1:
            raise ModelPackageError(f"{path}: member {name!r} is encrypted; PASeg packages are not")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelPackageError(f"{path}: member {name!r} uses an unsupported compression method "
                                    f"({info.compress_type}); PASeg packages are stored or deflated")
        limit = MAX_MEMBER_BYTES[name]
        if info.file_size > limit:
            raise ModelPackageError(f"{path}: member {name!r} declares {info.file_size} bytes uncompressed, more than "
                                    f"the {limit} a package member may hold (a zip bomb?); nothing was extracted")
        if info.file_size > 0 and (info.compress_size <= 0 or info.file_size / info.compress_size > MAX_RATIO):
            raise ModelPackageError(f"{path}: member {name!r} expands {info.file_size} bytes from "
                                    f"{info.compress_size} (ratio above {MAX_RATIO:g}: a zip bomb?); nothing was "
                                    f"extracted")
        members[name] = info
    if len(infos) > len(MEMBERS):
        extra = [i.filename for i in infos if i.filename not in MEMBERS][:3] or [infos[-1].filename]
        raise ModelPackageError(f"{path}: unexpected member(s) {extra!r} (a package holds only {', '.join(MEMBERS)}); "
                                f"the package is refused")
    missing = [m for m in MEMBERS if m not in members]
    if missing:
        raise ModelPackageError(f"{path}: member {missing[0]} is missing; not a complete PASeg model package")
    return members


def _stream(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, sink: Optional[IO[bytes]]) -> tuple:
    """Read member ``info`` (bytes counted against its declared size and limit); returns ``(size, sha256 hex)``."""
    digest, size = hashlib.sha256(), 0
    limit = min(info.file_size, MAX_MEMBER_BYTES[info.filename])
    try:
        with archive.open(info) as source:
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise ModelPackageError(f"{path}: member {info.filename!r} expands beyond its declared "
                                            f"{info.file_size} bytes (a zip bomb?); reading stopped")
                digest.update(chunk)
                if sink is not None:
                    sink.write(chunk)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ModelPackageError(f"{path}: member {info.filename!r} is damaged ({exc})") from None
    return size, digest.hexdigest()


def _read_card(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Dict[str, Any]:
    from io import BytesIO

    buffer = BytesIO()
    _stream(path, archive, info, buffer)
    try:
        card = json.loads(buffer.getvalue().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelPackageError(f"{path}: member {CARD} is not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != PACKAGE_FORMAT:
        raise ModelPackageError(f"{path}: member {CARD} has no '{PACKAGE_FORMAT}' format marker; not a PASeg model "
                                f"package")
    version = card.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        hint = "update PASeg to read it" if newer else "export the model again with this PASeg"
        raise ModelPackageError(f"{path}: package format version {version!r} is not the version {FORMAT_VERSION} "
                                f"this PASeg reads; {hint}")
    from PASegLib.interop.model_card import check_card

    try:
        check_card(card)
    except ValueError as exc:
        raise ModelPackageError(f"{path}: member {CARD}: {exc}") from None
    members = card.get("members")
    if not isinstance(members, dict) or set(members) != {CONFIG, WEIGHTS}:
        listed = sorted(members) if isinstance(members, dict) else members
        raise ModelPackageError(f"{path}: member {CARD}: 'members' must give the size and SHA-256 of {CONFIG} and "
                                f"{WEIGHTS}, found {listed!r}")
    for name, entry in members.items():
        ok = isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA256.match(entry["sha256"]) \
            and isinstance(entry.get("size"), int) and not isinstance(entry.get("size"), bool) and entry["size"] >= 0
        if not ok:
            raise ModelPackageError(f"{path}: member {CARD}: the manifest entry of {name} needs 'size' (bytes) and "
                                    f"'sha256' (64 hexadecimal digits), found {entry!r:.200}")
    return card


def _verified(path: PathLike, sink: Optional[Callable[[str], Any]] = None) -> Dict[str, Any]:
    """Check the package at ``path`` and every member against its card; ``sink(name)`` gives a context manager
    yielding the file object a member is copied into (``None``: the members are only hashed)."""
    path = Path(path)
    if not path.exists():
        raise ModelPackageError(f"model package not found: {path}")
    if not path.is_file():
        raise ModelPackageError(f"{path} is not a file; a model package is one .zip file (a run folder is a folder "
                                f"holding config.json and checkpoints/)")
    if path.suffix.lower() == ".pt":
        raise ModelPackageError(f"{path} is a checkpoint, not a model package: give its run folder and "
                                f"--checkpoint {path}, or export the run with `paseg export model`")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise ModelPackageError(f"{path}: not a PASeg model package (not a readable zip archive: {exc})") from None
    with archive:
        members = _check_headers(path, archive)
        card = _read_card(path, archive, members[CARD])
        for name in (CONFIG, WEIGHTS):
            expected = card["members"][name]
            if members[name].file_size != expected["size"]:
                raise ModelPackageError(f"{path}: member {name} holds {members[name].file_size} bytes, its card says "
                                        f"{expected['size']}: the package was tampered with or damaged")
            with (sink(name) if sink is not None else contextlib.nullcontext()) as target:
                size, digest = _stream(path, archive, members[name], target)
            if size != expected["size"] or digest != expected["sha256"]:
                raise ModelPackageError(f"{path}: member {name} does not match the SHA-256 in its card: the package "
                                        f"was tampered with or damaged; get it again from its source")
    return card


def read_model_package(path: PathLike) -> Dict[str, Any]:
    """The card of the model package ``path`` after checking the whole package (see the module docstring);
    nothing is extracted.

    Raises:
        ModelPackageError: naming the package and the member that is wrong.
    """
    return _verified(path)


def extract_model_package(path: PathLike, dest: PathLike) -> Dict[str, Any]:
    """Check the package ``path`` and write its members into the folder ``dest`` (created; it must be empty); returns
    the card. A refused package leaves no member behind (and no ``dest`` it created).

    Raises:
        ModelPackageError: as :func:`read_model_package`; ``ValueError`` when ``dest`` is not an empty folder.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest}: extract a model package into a new or empty folder")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def sink(name: str) -> Iterator[IO[bytes]]:
        with open(dest / name, "xb") as handle:
            yield handle

    try:
        card = _verified(path, sink)
        (dest / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        for name in MEMBERS:
            with contextlib.suppress(OSError):
                (dest / name).unlink()
        if created:
            with contextlib.suppress(OSError):
                dest.rmdir()
        raise
    return card


def load_package_predictor(
    path: PathLike,
    *,
    checkpoint: Union[str, PathLike] = "best",
    ensemble: bool = False,
    device: str = "auto",
    sw_batch_size: int = 1,
    verbose: bool = True,
    use_clicks: bool = True,
    cpu_bf16: Optional[bool] = None,
) -> Any:
    """A :class:`~PASegLib.inference.predictor.Predictor` for the model package ``path`` (checked first).

    The members are extracted into a temporary folder, loaded with
    :func:`~PASegLib.inference.predictor.load_predictor` (weights through ``torch.load(weights_only=True)``) and the
    folder removed. An ensemble package predicts with both networks; ``predictor.card`` is the package's card and
    ``predictor.source`` the package.

    Args:
        checkpoint: must stay ``"best"``: a package holds the one checkpoint it was exported with.
        ensemble: ``True`` requires an ensemble package (an ensemble package is always used as one).
        device, sw_batch_size, verbose, use_clicks, cpu_bf16: as :func:`~PASegLib.inference.predictor.load_predictor`.

    Raises:
        ModelPackageError: a bad package (see the module docstring), another ``checkpoint``, or ``ensemble`` with a
            package of one network.
    """
    from PASegLib.inference.predictor import load_predictor

    path = Path(path)
    if str(checkpoint) != "best":
        raise ModelPackageError(f"{path}: a model package holds one checkpoint (chosen when it was exported); "
                                f"--checkpoint {checkpoint} applies to run folders")
    with tempfile.TemporaryDirectory(prefix="paseg-package-") as folder:
        card = extract_model_package(path, folder)
        if ensemble and not card["ensemble"]:
            raise ModelPackageError(f"{path}: --ensemble needs an ensemble package (paseg export model RUN --ensemble "
                                    f"of an SCM run); this one holds {' and '.join(card['networks'])} only")
        try:
            predictor = load_predictor(folder, checkpoint=Path(folder) / WEIGHTS, ensemble=bool(card["ensemble"]),
                                       device=device, sw_batch_size=sw_batch_size, verbose=verbose,
                                       use_clicks=use_clicks, cpu_bf16=cpu_bf16)
        except ValueError as exc:  # CheckpointError too: name the package, not the temporary folder it came from
            text = str(exc)
            if folder not in text:
                raise
            text = text.replace(str(Path(folder) / WEIGHTS), f"{path} (member {WEIGHTS})").replace(folder, str(path))
            raise ModelPackageError(text) from None
    predictor.source, predictor.card = path, card
    return predictor


# -- writing ---------------------------------------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_archive(out: Path, folder: Path, card: Dict[str, Any], created: tuple) -> None:
    """Write the zip of ``folder``'s members (with ``card``) to ``out`` atomically."""
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w") as archive:
            for name in MEMBERS:
                info = zipfile.ZipInfo(name, date_time=created)
                info.create_system, info.external_attr = 3, (stat.S_IFREG | 0o644) << 16
                if name == CARD:
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, json.dumps(card, indent=2) + "\n")
                    continue
                info.compress_type = zipfile.ZIP_STORED if name == WEIGHTS else zipfile.ZIP_DEFLATED
                size = (folder / name).stat().st_size
                with open(folder / name, "rb") as source, archive.open(info, "w", force_zip64=size >= 1 << 31) as dst:
                    shutil.copyfileobj(source, dst, _CHUNK)


def export_model_package(
    run_dir: PathLike,
    out: PathLike,
    *,
    checkpoint: Union[str, PathLike] = "best",
    ensemble: bool = False,
    description: str = "",
    dataset: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Write the model of the run folder ``run_dir`` as the package ``out`` (a ``.zip`` file); returns its card.

    Args:
        run_dir: a run folder written by ``paseg train`` / ``paseg run`` (``config.json``, ``checkpoints/``).
        out: the package to write (``.zip``; replaced atomically when it exists; nothing is written on failure).
        checkpoint: ``"best"`` (falls back to ``"last"`` when no validation ran), ``"last"`` or a checkpoint file, as
            ``paseg predict --checkpoint``.
        ensemble: package both networks of an SCM (stage-2) run; they predict together (SCM-E).
        description: free text for the card (at most
            :data:`~PASegLib.interop.model_card.MAX_DESCRIPTION` characters; no case identifiers).
        dataset: the dataset folder the run was trained on: the card then counts its training cases' annotation
            kinds (``None``: the kinds stay unknown).

    Raises:
        ValueError: a bad run folder, checkpoint, description or ``out``; a case identifier that would end up in
            the package (names it).
        CheckpointError: a missing or unreadable checkpoint.
    """
    from PASegLib.inference.predictor import ROLES, resolve_checkpoint
    from PASegLib.interop.model_card import build_card, check_no_case_ids, run_case_ids
    from PASegLib.training.checkpoint import load_checkpoint, save_checkpoint
    from PASegLib.training.config import load_run_config, saved_config

    run, out = Path(run_dir), Path(out)
    if out.suffix.lower() != ".zip":
        raise ValueError(f"--out {out}: a model package is a .zip file (e.g. {out.with_suffix('.zip').name})")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the package's file name (MODEL.zip)")
    path, _ = resolve_checkpoint(run, checkpoint)
    run_config = load_run_config(run / "config.json") if (run / "config.json").is_file() else None
    expected = {"primary": run_config.network} if run_config is not None else {}
    if ensemble and run_config is not None:
        if run_config.stage != 2:
            raise ValueError(f"run {run}: --ensemble needs a stage-2 (SCM) run with a primary and an auxiliary "
                             f"network; this is a stage-{run_config.stage} run ({run_config.network} only)")
        expected["auxiliary"] = run_config.aux_network
    data = load_checkpoint(path, expected_networks=expected or None)
    roles = ROLES if ensemble else ROLES[:1]
    entries = data["networks"]
    if any(not isinstance(entries.get(role), dict) for role in roles):
        raise ValueError(f"run {run}: {path.name} holds the network(s) {sorted(entries)}; --ensemble needs an SCM "
                         f"checkpoint with a primary and an auxiliary network")
    try:
        source_config = saved_config(dict(data["config"])) if "config" in data else run_config
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid training configuration in the checkpoint: {exc}") from None
    if source_config is None:
        raise ValueError(f"{path}: the checkpoint holds no configuration and {run} has no config.json")
    config = source_config.replace(pseudo_labels=None)  # a folder path of the exporter's machine
    payload = {"kind": data.get("kind"), "config": config.to_dict(),
               "networks": {role: {key: entries[role][key] for key in ("name", "state_dict", "kwargs")
                                   if key in entries[role]} for role in roles}}
    case_ids = run_case_ids(run)
    named = "best" if path == run / "checkpoints" / "best.pt" else "last" if path.name == "last.pt" and \
        path.parent == run / "checkpoints" else "file"
    card = {"format": PACKAGE_FORMAT, "format_version": FORMAT_VERSION,
            **build_card(run, data, config, networks=[entries[r]["name"] for r in roles], ensemble=ensemble,
                         checkpoint=named, description=description, dataset=dataset)}
    out_parent_existed = out.parent.exists()
    with tempfile.TemporaryDirectory(prefix="paseg-export-") as staging:
        folder = Path(staging)
        (folder / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        save_checkpoint(folder / WEIGHTS, payload)
        check_no_case_ids(case_ids, description=description, configuration=config.to_dict(), weights=payload)
        card["members"] = {name: {"size": (folder / name).stat().st_size, "sha256": _sha256_file(folder / name)}
                           for name in (CONFIG, WEIGHTS)}
        created = tuple(int(v) for v in re.findall(r"\d+", card["created"])[:6])
        staged = folder / "package.zip"
        _write_archive(staged, folder, card, created)
        load_package_predictor(staged, device="cpu", verbose=False)  # what is written predicts
        try:
            with atomic_path(out) as tmp:
                shutil.copyfile(staged, tmp)
        except BaseException:
            if not out_parent_existed:
                with contextlib.suppress(OSError):
                    os.rmdir(out.parent)
            raise
    return card


def describe_members(card: Dict[str, Any]) -> Sequence[str]:
    """One line per manifest entry: ``name  size  sha256`` (for ``paseg show-model``)."""
    return [f"{name}  {entry['size']} bytes  sha256 {entry['sha256']}" for name, entry in card["members"].items()]
