"""Tiny, deterministic generators of *real* media files for the fakes and tests.

Everything here is pure standard library and produces byte-identical output for
the same parameters:

* :func:`make_png` — a valid PNG (zlib + struct), solid colour, optional ``tEXt``
  chunks (ComfyUI stores ``prompt`` and ``workflow`` there).
* :func:`make_jpeg` — a valid baseline JPEG (solid colour; every 8x8 block carries
  only its DC coefficient). Used for the WebSocket latent previews, which the real
  server sends as JPEG.
* :func:`make_webp` / :func:`make_animated_webp` — lossless WebP (VP8L) frames of a
  solid colour, wrapped in a ``VP8X``/``ANIM``/``ANMF`` container when animated.
* :func:`make_wav` — 16-bit PCM WAV via :mod:`wave` (a sine tone).
* :func:`make_mp4` — an MP4 (``ftyp`` + ``moov`` + ``mdat``) carrying a real H.264
  Constrained Baseline stream: the first frame is an IDR picture made only of
  ``I_PCM`` macroblocks (raw samples, so no DCT/entropy coder is needed), the
  following frames are P pictures that skip every macroblock. It is therefore a
  genuine, decodable H.264 video without any encoder binary. No ``ffmpeg`` or
  ``imageio-ffmpeg`` is needed or used: the same bytes come out on every machine,
  which keeps the fake deterministic.

Colours are given as ``0xRRGGBB`` integers (as ComfyUI's ``EmptyImage.color``) or
``(r, g, b)`` tuples.
"""

from __future__ import annotations

import io
import math
import struct
import wave
import zlib

__all__ = [
    "make_animated_webp",
    "make_jpeg",
    "make_mp4",
    "make_png",
    "make_wav",
    "make_webp",
    "png_size",
    "rgb",
]

Colour = int | tuple[int, int, int]


def rgb(colour: Colour) -> tuple[int, int, int]:
    """``0xRRGGBB`` or ``(r, g, b)`` → ``(r, g, b)`` clamped to 0..255."""
    if isinstance(colour, int):
        return (colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF
    r, g, b = colour
    return tuple(max(0, min(255, int(c))) for c in (r, g, b))  # type: ignore[return-value]


# --------------------------------------------------------------------------- PNG


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def make_png(
    width: int = 64,
    height: int = 64,
    colour: Colour = 0,
    *,
    text: dict[str, str] | None = None,
) -> bytes:
    """A solid-colour 8-bit RGB PNG, optionally with ``tEXt`` chunks."""
    if width < 1 or height < 1:
        raise ValueError("PNG size must be positive")
    r, g, b = rgb(colour)
    row = b"\x00" + bytes((r, g, b)) * width
    raw = row * height
    out = [
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
    ]
    for key, value in (text or {}).items():
        out.append(
            _png_chunk(
                b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace")
            )
        )
    out.append(_png_chunk(b"IDAT", zlib.compress(raw, 6)))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def png_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG, or None when ``data`` is not a PNG."""
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


# -------------------------------------------------------------------------- JPEG

# Standard (Annex K) luminance DC table: code-length counts and values.
_DC_BITS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
_DC_VALS = list(range(12))


def _canonical_codes(bits: list[int], vals: list[int]) -> dict[int, tuple[int, int]]:
    codes: dict[int, tuple[int, int]] = {}
    code = 0
    k = 0
    for length, count in enumerate(bits, start=1):
        for _ in range(count):
            codes[vals[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


class _JpegBits:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value: int, length: int) -> None:
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc = 0
                self.n = 0

    def flush(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


def make_jpeg(width: int = 64, height: int = 64, colour: Colour = 0) -> bytes:
    """A solid-colour baseline JFIF JPEG (YCbCr 4:4:4, quantiser 1)."""
    r, g, b = rgb(colour)
    ycc = (
        0.299 * r + 0.587 * g + 0.114 * b,
        -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
        0.5 * r - 0.418688 * g - 0.081312 * b + 128,
    )
    dcs = [round(8 * (v - 128)) for v in ycc]
    dc_codes = _canonical_codes(_DC_BITS, _DC_VALS)
    eob = (0, 1)  # our AC table holds a single symbol (EOB) with the 1-bit code "0"
    bits = _JpegBits()
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    prev = [0, 0, 0]
    for _ in range(blocks):
        for c in range(3):
            diff = dcs[c] - prev[c]
            prev[c] = dcs[c]
            cat = abs(diff).bit_length()
            code, length = dc_codes[cat]
            bits.put(code, length)
            if cat:
                bits.put(diff if diff > 0 else diff + (1 << cat) - 1, cat)
            bits.put(*eob)
    scan = bits.flush()

    def seg(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload

    app0 = seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = seg(0xDB, b"\x00" + b"\x01" * 64)
    sof = seg(
        0xC0, struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    )
    dht_dc = seg(0xC4, b"\x00" + bytes(_DC_BITS) + bytes(_DC_VALS))
    dht_ac = seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    sos = seg(0xDA, b"\x03\x01\x00\x02\x00\x03\x00\x00\x3f\x00")
    return b"\xff\xd8" + app0 + dqt + sof + dht_dc + dht_ac + sos + scan + b"\xff\xd9"


# -------------------------------------------------------------------------- WebP


class _LsbBits:
    def __init__(self) -> None:
        self.value = 0
        self.n = 0

    def put(self, value: int, length: int) -> None:
        self.value |= (value & ((1 << length) - 1)) << self.n
        self.n += length

    def tobytes(self) -> bytes:
        return self.value.to_bytes((self.n + 7) // 8, "little")


def _vp8l(width: int, height: int, colour: Colour) -> bytes:
    """VP8L bitstream of a solid colour: five single-symbol prefix codes, so every
    pixel costs zero bits."""
    r, g, b = rgb(colour)
    bits = _LsbBits()
    bits.put(width - 1, 14)
    bits.put(height - 1, 14)
    bits.put(0, 1)  # alpha_is_used
    bits.put(0, 3)  # version
    bits.put(0, 1)  # no transform
    bits.put(0, 1)  # no colour cache
    bits.put(0, 1)  # no meta prefix codes
    for symbol in (g, r, b, 255):
        bits.put(1, 1)  # simple code
        bits.put(0, 1)  # one symbol
        bits.put(1, 1)  # 8-bit symbol
        bits.put(symbol, 8)
    bits.put(1, 1)  # distance code: simple, one 1-bit symbol 0
    bits.put(0, 1)
    bits.put(0, 1)
    bits.put(0, 1)
    return b"\x2f" + bits.tobytes()


def _riff_chunk(kind: bytes, data: bytes) -> bytes:
    pad = b"\x00" if len(data) % 2 else b""
    return kind + struct.pack("<I", len(data)) + data + pad


def _u24(v: int) -> bytes:
    return struct.pack("<I", v)[:3]


def make_webp(width: int = 64, height: int = 64, colour: Colour = 0) -> bytes:
    """A still, lossless, solid-colour WebP."""
    body = b"WEBP" + _riff_chunk(b"VP8L", _vp8l(width, height, colour))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def make_animated_webp(
    width: int = 64,
    height: int = 64,
    colours: list[Colour] | tuple[Colour, ...] = (0, 0xFFFFFF),
    *,
    fps: float = 6.0,
    loop: int = 0,
) -> bytes:
    """An animated lossless WebP, one solid-colour frame per entry of ``colours``."""
    duration = int(1000.0 / fps)
    chunks = [
        _riff_chunk(b"VP8X", bytes([0x02]) + b"\x00\x00\x00" + _u24(width - 1) + _u24(height - 1)),
        _riff_chunk(b"ANIM", b"\xff\xff\xff\xff" + struct.pack("<H", loop)),
    ]
    for colour in colours:
        frame = _u24(0) + _u24(0) + _u24(width - 1) + _u24(height - 1) + _u24(duration) + b"\x00"
        chunks.append(
            _riff_chunk(b"ANMF", frame + _riff_chunk(b"VP8L", _vp8l(width, height, colour)))
        )
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --------------------------------------------------------------------------- WAV


def make_wav(
    seconds: float = 1.0,
    *,
    sample_rate: int = 44100,
    channels: int = 1,
    frequency: float = 440.0,
    amplitude: float = 0.25,
) -> bytes:
    """16-bit PCM WAV with a sine tone (silence when ``amplitude`` is 0)."""
    frames = round(seconds * sample_rate)
    samples = bytearray()
    for i in range(frames):
        v = round(amplitude * 32767 * math.sin(2 * math.pi * frequency * i / sample_rate))
        samples += struct.pack("<h", v) * channels
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(bytes(samples))
    return buf.getvalue()


# ------------------------------------------------------------------ H.264 / MP4


class _RbspBits:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def u(self, value: int, length: int) -> None:
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                self.acc = 0
                self.n = 0

    def ue(self, value: int) -> None:
        v = value + 1
        length = v.bit_length()
        self.u(0, length - 1)
        self.u(v, length)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align_zero(self) -> None:
        while self.n:
            self.u(0, 1)

    def raw(self, data: bytes) -> None:
        assert self.n == 0
        self.out += data

    def trailing(self) -> bytes:
        self.u(1, 1)
        self.align_zero()
        return bytes(self.out)


def _nal(ref_idc: int, kind: int, rbsp: bytes) -> bytes:
    """NAL unit with emulation-prevention bytes (no start code)."""
    out = bytearray([(ref_idc << 5) | kind])
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _h264_stream(
    width: int, height: int, frames: int, colour: Colour
) -> tuple[bytes, bytes, list[bytes]]:
    mbs_w, mbs_h = (width + 15) // 16, (height + 15) // 16
    r, g, b = rgb(colour)
    # BT.601 limited range; never 0, so the PCM payload needs no emulation prevention.
    y = round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255)
    cb = round(128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255)
    cr = round(128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255)

    sps = _RbspBits()
    sps.u(66, 8)  # profile_idc: Baseline
    sps.u(0xC0, 8)  # constraint_set0/1 (Constrained Baseline)
    sps.u(40, 8)  # level_idc 4.0
    sps.ue(0)  # seq_parameter_set_id
    sps.ue(0)  # log2_max_frame_num_minus4
    sps.ue(2)  # pic_order_cnt_type
    sps.ue(1)  # max_num_ref_frames
    sps.u(0, 1)  # gaps_in_frame_num_value_allowed_flag
    sps.ue(mbs_w - 1)
    sps.ue(mbs_h - 1)
    sps.u(1, 1)  # frame_mbs_only_flag
    sps.u(1, 1)  # direct_8x8_inference_flag
    crop_r, crop_b = (mbs_w * 16 - width) // 2, (mbs_h * 16 - height) // 2
    if crop_r or crop_b:
        sps.u(1, 1)
        for v in (0, crop_r, 0, crop_b):
            sps.ue(v)
    else:
        sps.u(0, 1)
    sps.u(0, 1)  # vui_parameters_present_flag
    sps_nal = _nal(3, 7, sps.trailing())

    pps = _RbspBits()
    pps.ue(0)  # pic_parameter_set_id
    pps.ue(0)  # seq_parameter_set_id
    pps.u(0, 1)  # entropy_coding_mode_flag (CAVLC)
    pps.u(0, 1)  # bottom_field_pic_order_in_frame_present_flag
    pps.ue(0)  # num_slice_groups_minus1
    pps.ue(0)  # num_ref_idx_l0_default_active_minus1
    pps.ue(0)  # num_ref_idx_l1_default_active_minus1
    pps.u(0, 1)  # weighted_pred_flag
    pps.u(0, 2)  # weighted_bipred_idc
    pps.se(0)  # pic_init_qp_minus26
    pps.se(0)  # pic_init_qs_minus26
    pps.se(0)  # chroma_qp_index_offset
    pps.u(1, 1)  # deblocking_filter_control_present_flag
    pps.u(0, 1)  # constrained_intra_pred_flag
    pps.u(0, 1)  # redundant_pic_cnt_present_flag
    pps_nal = _nal(3, 8, pps.trailing())

    pcm = bytes([y]) * 256 + bytes([cb]) * 64 + bytes([cr]) * 64
    samples = []
    for n in range(frames):
        s = _RbspBits()
        s.ue(0)  # first_mb_in_slice
        if n == 0:
            s.ue(7)  # slice_type: I (all)
            s.ue(0)  # pic_parameter_set_id
            s.u(0, 4)  # frame_num
            s.ue(0)  # idr_pic_id
            s.u(0, 1)  # no_output_of_prior_pics_flag
            s.u(0, 1)  # long_term_reference_flag
            s.se(0)  # slice_qp_delta
            s.ue(1)  # disable_deblocking_filter_idc
            for _ in range(mbs_w * mbs_h):
                s.ue(25)  # mb_type I_PCM
                s.align_zero()
                s.raw(pcm)
            samples.append(_nal(3, 5, s.trailing()))
        else:
            s.ue(5)  # slice_type: P (all)
            s.ue(0)
            s.u(n % 16, 4)  # frame_num
            s.u(0, 1)  # num_ref_idx_active_override_flag
            s.u(0, 1)  # ref_pic_list_modification_flag_l0
            s.u(0, 1)  # adaptive_ref_pic_marking_mode_flag
            s.se(0)
            s.ue(1)
            s.ue(mbs_w * mbs_h)  # mb_skip_run: every macroblock copies the reference
            samples.append(_nal(2, 1, s.trailing()))
    return sps_nal, pps_nal, samples


def _box(kind: bytes, *payload: bytes) -> bytes:
    data = b"".join(payload)
    return struct.pack(">I", len(data) + 8) + kind + data


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def make_mp4(
    width: int = 64,
    height: int = 64,
    frames: int = 12,
    fps: float = 12.0,
    colour: Colour = 0,
) -> bytes:
    """An H.264 MP4 of ``frames`` solid-colour frames (see the module docstring)."""
    width += width % 2
    height += height % 2
    sps, pps, nals = _h264_stream(width, height, frames, colour)
    sample_data = [struct.pack(">I", len(n)) + n for n in nals]
    timescale = max(1, round(fps * 1000))
    delta = 1000
    media_duration = frames * delta
    movie_duration = round(frames * 1000 / fps)

    avcc = _box(
        b"avcC",
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]),
        struct.pack(">H", len(sps)),
        sps,
        b"\x01",
        struct.pack(">H", len(pps)),
        pps,
    )
    avc1 = _box(
        b"avc1",
        b"\x00" * 6 + struct.pack(">H", 1),
        b"\x00" * 16,
        struct.pack(">HH", width, height),
        struct.pack(">II", 0x00480000, 0x00480000),
        b"\x00" * 4,
        struct.pack(">H", 1),
        b"\x00" * 32,
        struct.pack(">Hh", 0x18, -1),
        avcc,
    )

    def moov(chunk_offset: int) -> bytes:
        stbl = _box(
            b"stbl",
            _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
            _full_box(b"stts", 0, 0, struct.pack(">III", 1, frames, delta)),
            _full_box(b"stss", 0, 0, struct.pack(">II", 1, 1)),
            _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, frames, 1)),
            _full_box(
                b"stsz",
                0,
                0,
                struct.pack(">II", 0, frames),
                *(struct.pack(">I", len(s)) for s in sample_data),
            ),
            _full_box(b"stco", 0, 0, struct.pack(">II", 1, chunk_offset)),
        )
        minf = _box(
            b"minf",
            _full_box(b"vmhd", 0, 1, b"\x00" * 8),
            _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1))),
            stbl,
        )
        mdia = _box(
            b"mdia",
            _full_box(
                b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, media_duration, 0x55C4, 0)
            ),
            _full_box(b"hdlr", 0, 0, b"\x00" * 4, b"vide", b"\x00" * 12, b"VideoHandler\x00"),
            minf,
        )
        tkhd = _full_box(
            b"tkhd",
            0,
            3,
            struct.pack(">IIIII", 0, 0, 1, 0, movie_duration),
            b"\x00" * 8,
            struct.pack(">hhhH", 0, 0, 0, 0),
            _MATRIX,
            struct.pack(">II", width << 16, height << 16),
        )
        mvhd = _full_box(
            b"mvhd",
            0,
            0,
            struct.pack(">IIIIIH", 0, 0, 1000, movie_duration, 0x00010000, 0x0100),
            b"\x00" * 10,
            _MATRIX,
            b"\x00" * 24,
            struct.pack(">I", 2),
        )
        return _box(b"moov", mvhd, _box(b"trak", tkhd, mdia))

    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomiso2avc1mp41")
    size_moov = len(moov(0))
    offset = len(ftyp) + size_moov + 8
    return ftyp + moov(offset) + _box(b"mdat", *sample_data)
