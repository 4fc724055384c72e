"""Reading the files a user hands us: one place for text, YAML and CSV, so every verb fails the same way.

A params file, a profile, a claims file, a release manifest or a split CSV that is missing, a folder, not UTF-8
text, not YAML, a mapping with a key given twice, or a CSV without a header or with a repeated column becomes one
ReproError line naming the file (and the line or key where there is one). Exercised by every `repro` verb that
reads params.yaml, `repro verify` (paper/claims.yaml), `repro eval` (paper/checkpoints.yaml) and
`repro finetune` (data/splits/NAME.csv).
"""


import csv
import io
from pathlib import Path

from repro.errors import ReproError


def read_text(path: Path | str, missing_hint: str = "") -> str:
    """The file's text; a missing file, a folder, or bytes that are not UTF-8 text is one error naming it."""
    path = Path(path)
    if path.is_dir():
        raise ReproError(f"{path}: is a folder, expected a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReproError(f"{path}: not found" + (f"; {missing_hint}" if missing_hint else "")) from None
    except OSError as exc:
        raise ReproError(f"{path}: cannot be read ({exc.strerror})") from None
    if b"\0" in data:
        raise ReproError(f"{path}: a binary file, expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ReproError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8") from None


def _loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """yaml.safe_load, except that a mapping giving one key twice is an error instead of the last one winning."""

    def mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key]} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeyLoader


def load_yaml(path: Path | str, missing_hint: str = "") -> object:
    """The YAML document in `path` (safe types only); duplicate keys and syntax errors name the file and line."""
    import yaml

    text = read_text(path, missing_hint)
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else f"{path}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ReproError(f"{where}: not valid YAML: {problem}") from None


def read_csv(path: Path | str, required: tuple[str, ...] = (), missing_hint: str = "") -> list[dict[str, str]]:
    """The rows of a CSV with a header; no header, a repeated or missing required column is one error."""
    text = read_text(path, missing_hint)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames
    if not header:
        raise ReproError(f"{path}: empty, expected a CSV header" + (f" ({','.join(required)})" if required else ""))
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ReproError(f"{path}:1: column {repeated[0]!r} appears more than once in the header")
    if not set(required) <= set(header):
        raise ReproError(f"{path}: expected columns {','.join(required)}, found {','.join(header)}")
    rows = []
    try:
        for row in reader:
            if None in row or None in row.values():  # more or fewer fields than the header
                raise ReproError(f"{path}:{reader.line_num}: expected {len(header)} fields ({','.join(header)})")
            rows.append(row)
    except csv.Error as exc:
        raise ReproError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    return rows


def output_path(path: Path | None, *, folder: bool = False) -> Path | None:
    """The one check of a path we are about to write (a file, or with `folder` a folder), made before any work
    starts: a folder where a file goes, a path under an existing file, or a place that cannot be written
    (read-only file system, immutable or permission-denied folder) is one ReproError naming the path. Used as the
    Typer callback of every output option (`--out`, `--json`)."""
    import os

    if path is None:
        return None
    path = Path(path)
    if path.exists():
        if path.is_dir() != folder:
            raise ReproError(f"{path}: is {'a file' if folder else 'a folder'}, expected "
                             f"{'a folder' if folder else 'a file'} path to write")
        if not os.access(path if folder else path.parent, os.W_OK) or (not folder and not os.access(path, os.W_OK)):
            raise ReproError(f"{path}: cannot be written here (read-only or permission denied)")
        return path
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ReproError(f"{path}: cannot be written, {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ReproError(f"{path}: cannot be written, {ancestor} is read-only or not writable")
    return path


def output_file_option(value: Path | None) -> Path | None:
    """Typer callback of an output-file option (one parameter, so Typer hands it the value)."""
    return output_path(value)


def output_folder_option(value: Path | None) -> Path | None:
    """Typer callback of an output-folder option."""
    return output_path(value, folder=True)
