"""The audio every process agrees on: 16 kHz mono int16, in fixed frames, and WAV files read safely.

``SAMPLE_RATE`` and ``FRAME_SAMPLES`` are defined here once. ``load_wav`` reads any PCM or float
WAV (mono-mixed, resampled with soxr) and turns anything that is not usable audio into an
``AudioFormatError`` that names the file, never an exception from deep inside numpy.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

SAMPLE_RATE = 16_000  # Hz; every ring, engine and corpus file
FRAME_SAMPLES = 1280  # 80 ms: openWakeWord's native frame, the default audio-ring slot
SAMPLE_NS = 1_000_000_000 // SAMPLE_RATE  # one sample in nanoseconds (62 500)



class AudioFormatError(ValueError):
    """A file is not audio we can use; the message names the file and the reason."""


WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_* GUIDs share this tail after the 2-byte format code.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_FORMAT_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
                 0x0031: "GSM 6.10", 0x0050: "MPEG", 0x0055: "MP3", 0x00FF: "AAC"}

# Limits: generous for real audio, small enough that a lying header cannot make
# us allocate gigabytes or loop over millions of chunks.
MAX_DATA_BYTES = 2 * 1024**3          # 2 GiB of sample data (~3 h of 48 kHz stereo float)
MAX_FMT_BYTES = 4096
MAX_CHUNKS = 10_000
MIN_RATE, MAX_RATE = 1000, 768_000
MAX_CHANNELS = 64


@dataclass(frozen=True)
class WavInfo:
    """What the ``fmt `` chunk says, after validation."""
    format_tag: int        # WAVE_FORMAT_PCM or WAVE_FORMAT_IEEE_FLOAT (extensible resolved)
    channels: int
    rate: int
    bits: int              # container bits per sample
    block_align: int
    data_offset: int
    data_bytes: int

    @property
    def frames(self) -> int:
        return self.data_bytes // self.block_align


def read_wav_info(path: str | os.PathLike) -> WavInfo:
    """Parse and validate the RIFF/WAVE header of ``path`` without reading the samples.

    Why our own parser: the stdlib ``wave`` module rejects IEEE-float and
    WAVE_FORMAT_EXTENSIBLE files, which many tools write.  Every size is
    checked against the real file size before anything is allocated.
    """
    p = Path(path)

    def bad(reason: str) -> AudioFormatError:
        return AudioFormatError(f"{p}: {reason}")

    try:
        f = open(p, "rb")
    except OSError as e:
        raise bad(f"cannot open ({e.strerror or e})") from e
    with f:
        file_size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12:
            raise bad(f"truncated header ({file_size} bytes; a WAV file needs at least 44)")
        riff, _riff_size, wave = struct.unpack("<4sI4s", head)
        if riff == b"RF64":
            raise bad("RF64 (64-bit WAV) is not supported; convert to a plain WAV")
        if riff != b"RIFF" or wave != b"WAVE":
            raise bad(f"not a RIFF/WAVE file (starts with {head[:4]!r})")

        fmt: bytes | None = None
        pos = 12
        for _ in range(MAX_CHUNKS):
            hdr = f.read(8)
            if len(hdr) < 8:
                if fmt is None:
                    raise bad("truncated header: no 'fmt ' chunk")
                raise bad("no 'data' chunk (truncated file?)")
            cid, size = struct.unpack("<4sI", hdr)
            pos += 8
            remaining = file_size - pos
            if cid == b"fmt ":
                if not 16 <= size <= MAX_FMT_BYTES:
                    raise bad(f"'fmt ' chunk has an absurd size ({size} bytes)")
                fmt = f.read(size)
                if len(fmt) < size:
                    raise bad("truncated header: 'fmt ' chunk cut short")
            elif cid == b"data":
                if fmt is None:
                    raise bad("'data' chunk before the 'fmt ' chunk")
                info = _parse_fmt(fmt, bad)
                if size == 0:
                    raise bad("zero-length data chunk (no audio)")
                if size > remaining:
                    raise bad(f"data chunk claims {size} bytes but only {remaining} remain "
                              "(truncated or corrupt file)")
                if size > MAX_DATA_BYTES:
                    raise bad(f"data chunk of {size} bytes exceeds the {MAX_DATA_BYTES}-byte limit")
                if size < info.block_align:
                    raise bad(f"data chunk ({size} bytes) is shorter than one sample frame")
                return WavInfo(info.format_tag, info.channels, info.rate, info.bits,
                               info.block_align, pos, size)
            else:
                if size > remaining:
                    raise bad(f"chunk {cid!r} claims {size} bytes but only {remaining} remain")
            skip = size + (size & 1)  # chunks are word-aligned
            if cid != b"fmt ":
                f.seek(skip, os.SEEK_CUR)
            elif size & 1:
                f.seek(1, os.SEEK_CUR)
            pos += skip
        raise bad(f"more than {MAX_CHUNKS} chunks before 'data'")


def _parse_fmt(fmt: bytes, bad: Callable[[str], AudioFormatError]) -> WavInfo:
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            raise bad("WAVE_FORMAT_EXTENSIBLE header is too short")
        cb_size, _valid_bits, _mask = struct.unpack("<HHI", fmt[16:24])
        guid = fmt[24:40]
        if cb_size < 22 or guid[2:] != _GUID_TAIL:
            raise bad("WAVE_FORMAT_EXTENSIBLE with an unknown sub-format GUID")
        tag = struct.unpack("<H", guid[:2])[0]
    if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
        name = _FORMAT_NAMES.get(tag, f"format tag 0x{tag:04x}")
        raise bad(f"unsupported codec {name}; only PCM and IEEE float WAV are read")
    if not 1 <= channels <= MAX_CHANNELS:
        raise bad(f"absurd channel count {channels}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise bad(f"absurd sample rate {rate} Hz")
    ok_bits = (8, 16, 24, 32) if tag == WAVE_FORMAT_PCM else (32, 64)
    if bits not in ok_bits:
        kind = "PCM" if tag == WAVE_FORMAT_PCM else "float"
        raise bad(f"unsupported {bits}-bit {kind} samples (supported: {ok_bits})")
    if block_align != channels * bits // 8:
        raise bad(f"block align {block_align} does not match {channels} channel(s) x {bits} bits")
    return WavInfo(tag, channels, rate, bits, block_align, 0, 0)


def _decode(raw: np.ndarray, info: WavInfo) -> np.ndarray:
    """Raw little-endian bytes → float32 samples in [-1, 1], shape (frames, channels)."""
    if info.format_tag == WAVE_FORMAT_IEEE_FLOAT:
        x = raw.view("<f4" if info.bits == 32 else "<f8")
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)  # a copy; clip before narrowing so a
        x = np.clip(x, -1.0, 1.0).astype(np.float32)  # float64 beyond float32's range is no overflow warning
    elif info.bits == 8:
        x = (raw.astype(np.float32) - 128.0) / 128.0  # 8-bit WAV is unsigned
    elif info.bits == 16:
        x = raw.view("<i2").astype(np.float32) / 32768.0
    elif info.bits == 24:
        b = raw.reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v & 0x800000, v - 0x1000000, v)
        x = v.astype(np.float32) / 8388608.0
    else:
        x = (raw.view("<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    return x.reshape(-1, info.channels)


def load_wav(path: str | os.PathLike, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Load any PCM/float WAV as int16 mono at ``rate`` (16 kHz).

    Channels are averaged; other rates are resampled with soxr (HQ).  A 16-bit
    mono file already at ``rate`` comes back bit-exact.
    Raises AudioFormatError (naming the file) for anything that is not usable audio.
    """
    info = read_wav_info(path)
    n_bytes = info.frames * info.block_align  # a trailing partial frame is ignored
    with open(path, "rb") as f:
        f.seek(info.data_offset)
        raw = np.fromfile(f, dtype=np.uint8, count=n_bytes)
    if raw.size < n_bytes:  # the file shrank under us
        raise AudioFormatError(f"{path}: truncated data chunk")
    if info.format_tag == WAVE_FORMAT_PCM and info.bits == 16 and info.channels == 1 and info.rate == rate:
        return raw.view("<i2").astype(np.int16)
    x = _decode(raw, info)
    del raw
    mono = x[:, 0] if info.channels == 1 else x.mean(axis=1, dtype=np.float32)
    if info.rate != rate:
        mono = soxr.resample(mono, info.rate, rate, quality="HQ")
    if mono.size == 0:  # e.g. one sample at 48 kHz; an empty clip would break a looping WavSource
        raise AudioFormatError(f"{path}: too short: {info.frames} sample frame(s) at {info.rate} Hz "
                               f"is less than one sample at {rate} Hz")
    return to_int16(mono)


def to_int16(x: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] → int16, rounded and clipped."""
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)
