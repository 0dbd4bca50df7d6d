"""RFC 6381 codec strings derived from the real bitstream configuration (avcC / hvcC / av1C / AAC ASC).

A wrong CODECS attribute makes players silently skip a variant, so these are never guessed from settings.
Annex-B parameter sets (as some encoders emit them) are read directly from the SPS.
"""

from __future__ import annotations

from kinoray.errors import TranscodeError

__all__ = [
    "CONFIGURATION_BOXES",
    "aac_codec_string",
    "av1_codec_string",
    "codec_string",
    "configuration_record",
    "h264_codec_string",
    "hevc_codec_string",
]

#: the sample-entry child box that holds each video codec's decoder configuration record
CONFIGURATION_BOXES = {"h264": b"avcC", "hevc": b"hvcC", "av1": b"av1C"}


def configuration_record(init_segment: bytes, box: bytes) -> bytes:
    """The payload of the first ``box`` (e.g. ``avcC``) in an init segment the muxer wrote.

    Encoders hand over parameter sets in several shapes (Annex-B SPS/PPS, raw AV1 OBUs); the muxer turns
    them into the standard record, so that record is what a player will see and what CODECS must describe.
    """
    position = init_segment.find(box)
    if position < 4:
        raise TranscodeError(f"init segment has no {box.decode()} box")
    size = int.from_bytes(init_segment[position - 4 : position], "big")
    return init_segment[position + 4 : position - 4 + size]


def _annexb_units(data: bytes) -> list[bytes]:
    units, start = [], data.find(b"\x00\x00\x01")
    while start >= 0:
        nxt = data.find(b"\x00\x00\x01", start + 3)
        unit = data[start + 3 : nxt if nxt >= 0 else len(data)].rstrip(b"\x00")
        if unit:
            units.append(unit)
        start = nxt
    return units


def h264_codec_string(extradata: bytes) -> str:
    """``avc1.PPCCLL`` from an avcC record or an Annex-B SPS."""
    if extradata[:1] == b"\x01" and len(extradata) >= 4:
        profile, constraints, level = extradata[1], extradata[2], extradata[3]
    else:
        sps = next((u for u in _annexb_units(extradata) if u[0] & 0x1F == 7), None)
        if sps is None or len(sps) < 4:
            raise TranscodeError("H.264 configuration has no SPS")
        profile, constraints, level = sps[1], sps[2], sps[3]
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def hevc_codec_string(extradata: bytes, tag: str = "hvc1") -> str:
    """``hvc1.[A-C]?P.COMPAT.TL.CONSTRAINTS`` from an hvcC record or an Annex-B SPS's profile_tier_level."""
    if extradata[:1] == b"\x01" and len(extradata) >= 13:
        ptl = extradata[1:13]
    else:
        sps = next((u for u in _annexb_units(extradata) if (u[0] >> 1) & 0x3F == 33), None)
        if sps is None:
            raise TranscodeError("HEVC configuration has no SPS")
        ptl = _unescape(sps)[3:15]  # 2-byte NAL header, 1 byte vps id / max sub layers / nesting flag
    space, tier, profile = ptl[0] >> 6, (ptl[0] >> 5) & 1, ptl[0] & 0x1F
    compat = int.from_bytes(ptl[1:5], "big")
    compat_reversed = int(f"{compat:032b}"[::-1], 2)
    constraints = bytearray(ptl[5:11])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    level = ptl[11]
    prefix = ("", "A", "B", "C")[space]
    parts = [f"{tag}", f"{prefix}{profile}", f"{compat_reversed:X}", f"{'H' if tier else 'L'}{level}"]
    parts += [f"{b:02X}" for b in constraints]
    return ".".join(parts)


def av1_codec_string(extradata: bytes) -> str:
    """``av01.P.LLT.DD`` from an av1C record."""
    if len(extradata) < 4 or extradata[0] & 0x7F != 1:
        raise TranscodeError("AV1 configuration record (av1C) missing")
    profile, level = extradata[1] >> 5, extradata[1] & 0x1F
    tier = "H" if extradata[2] & 0x80 else "M"
    high_bitdepth, twelve_bit = extradata[2] & 0x40, extradata[2] & 0x20
    depth = 12 if twelve_bit else 10 if high_bitdepth else 8
    return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"


def aac_codec_string(extradata: bytes) -> str:
    """``mp4a.40.AOT`` from the AudioSpecificConfig."""
    if not extradata:
        return "mp4a.40.2"
    object_type = extradata[0] >> 3
    if object_type == 31 and len(extradata) >= 2:
        object_type = 32 + (((extradata[0] & 0x07) << 3) | (extradata[1] >> 5))
    return f"mp4a.40.{object_type}"


def codec_string(codec: str, extradata: bytes) -> str:
    if codec == "h264":
        return h264_codec_string(extradata)
    if codec == "hevc":
        return hevc_codec_string(extradata)
    if codec == "av1":
        return av1_codec_string(extradata)
    if codec == "aac":
        return aac_codec_string(extradata)
    raise TranscodeError(f"no codec string rule for {codec}")
