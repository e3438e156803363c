"""WADO-RS pieces without the network (PS3.18 section 10.4): Accept negotiation, frame lists,
instance metadata as DICOM JSON with BulkDataURIs, bulk data by path, rendering to JPEG/PNG.

The file-reading functions block (pydicom, Pillow): the service runs them in a thread.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement
from pydicom.encaps import generate_frames
from pydicom.multival import MultiValue

from novaza_gateway.imaging.dicomweb.attributes import JsonDataset
from novaza_gateway.imaging.dicomweb.multipart import parse_content_type
from novaza_gateway.imaging.errors import (
    ArchiveFileMissing,
    ArchiveStoreUnavailable,
    BulkDataNotFound,
    FrameNotFound,
    FramesUnavailable,
    NotAcceptable,
    RenderingUnavailable,
)

BULK_THRESHOLD = 1024
PIXEL_DATA = 0x7FE00010
THUMBNAIL_PIXELS = 128
DicomFile = Path | BinaryIO  # a path, or an open reader of the archive store


def accepts_multipart(accept: str | None, part_type: str) -> None:
    """406 unless Accept allows ``multipart/related; type=<part_type>`` (or anything)."""
    if not accept:
        return
    for item in accept.split(","):
        media, params = parse_content_type(item)
        if media in ("*/*", "multipart/*"):
            return
        if media == "multipart/related" and params.get("type", part_type).lower() in (
            part_type,
            "*/*",
            part_type.split("/")[0] + "/*",
        ):
            return
        if media == part_type:
            return
    raise NotAcceptable(f'This resource is served as multipart/related; type="{part_type}".')


def image_media_type(accept: str | None) -> str:
    """JPEG unless the caller asks for PNG (and not JPEG first)."""
    for item in (accept or "").split(","):
        media, _ = parse_content_type(item)
        if media in ("image/jpeg", "image/*", "*/*"):
            return "image/jpeg"
        if media == "image/png":
            return "image/png"
    if accept and "image/" not in accept and "*/*" not in accept:
        raise NotAcceptable("Rendered images are image/jpeg or image/png.")
    return "image/jpeg"


OCTETS = "application/octet-stream"
BITSTREAM_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}


def compressed_frame_type(accept: str | None, transfer_syntax: str) -> str:
    """The part type for frames kept compressed: their bitstream's image type, or
    ``application/octet-stream`` when the caller takes any transfer syntax (``*``) or this
    one (what OHIF asks for). No decompression: anything else is 406."""
    image = BITSTREAM_TYPES.get(transfer_syntax)
    if image is None:
        raise FramesUnavailable()
    if not accept:
        return image
    for item in accept.split(","):
        media, params = parse_content_type(item)
        if media in ("*/*", "multipart/*", image):
            return image
        if media == "multipart/related":
            part = params.get("type", OCTETS).lower()
            if part in (image, "*/*", "image/*"):
                return image
            if part == OCTETS and params.get("transfer-syntax") in ("*", transfer_syntax):
                return OCTETS
    raise FramesUnavailable()


def encapsulated_frames(path: DicomFile, numbers: list[int], number_of_frames: int) -> list[bytes]:
    ds = dcmread(path)
    frames = list(generate_frames(ds.PixelData, number_of_frames=number_of_frames))
    if len(frames) < max(numbers):
        raise FrameNotFound()
    return [frames[n - 1] for n in numbers]


def parse_frames(value: str, number_of_frames: int) -> list[int]:
    frames = []
    for item in value.split(","):
        item = item.strip()
        if not item.isdigit() or not 1 <= int(item) <= number_of_frames:
            raise FrameNotFound(f"Frames are numbered 1 to {number_of_frames}.")
        frames.append(int(item))
    return frames


# ----------------------------------------------------------------------------- metadata


def _element_paths(ds: Dataset, prefix: str, out: dict[int, str]) -> None:
    for elem in ds:
        path = f"{prefix}{elem.tag:08X}"
        out[id(elem)] = path
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                _element_paths(item, f"{path}/{index}/", out)


def instance_metadata(path: DicomFile, instance_url: str, pixel_vr: str | None) -> JsonDataset:
    """The instance's attributes as DICOM JSON; values over 1 KiB as BulkDataURIs."""
    ds = dcmread(path, stop_before_pixels=True)
    paths: dict[int, str] = {}
    _element_paths(ds, "", paths)

    def bulk_uri(elem: DataElement) -> str:
        return f"{instance_url}/bulkdata/{paths.get(id(elem), f'{elem.tag:08X}')}"

    result: JsonDataset = ds.to_json_dict(
        bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=bulk_uri
    )
    if pixel_vr:
        result["7FE00010"] = {"vr": pixel_vr, "BulkDataURI": f"{instance_url}/bulkdata/7FE00010"}
    return result


def bulk_value(path: DicomFile, bulk_path: str) -> bytes:
    """The value at ``TAG[/ITEM/TAG...]`` in the instance."""
    ds: Any = dcmread(path)
    parts = bulk_path.strip("/").split("/")
    try:
        for index in range(0, len(parts) - 1, 2):
            ds = ds[int(parts[index], 16)].value[int(parts[index + 1])]
        value = ds[int(parts[-1], 16)].value
    except (KeyError, ValueError, IndexError, TypeError):
        raise BulkDataNotFound() from None
    if isinstance(value, bytes):
        return value
    raise BulkDataNotFound("The attribute at this path is not bulk data.")


# ----------------------------------------------------------------------------- rendering


def render(path: DicomFile, frame: int, media_type: str, max_pixels: int | None) -> bytes:
    """Frame ``frame`` (1-based) as an 8-bit JPEG or PNG: windowed grayscale or RGB."""
    try:
        ds = dcmread(path)
        pixels = np.asarray(ds.pixel_array)
    except (ArchiveFileMissing, ArchiveStoreUnavailable):
        raise  # the store failed, not the rendering
    except Exception as exc:  # no pixel data, or a codec pydicom lacks here
        raise RenderingUnavailable() from exc
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    if frames > 1:
        pixels = pixels[frame - 1]
    elif frame != 1:
        raise FrameNotFound()
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if samples == 1:
        image = Image.fromarray(_window(ds, pixels, photometric == "MONOCHROME1"), mode="L")
    elif samples == 3 and photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        rgb = _to_uint8(pixels.astype(np.float64), float(pixels.min()), float(pixels.max()))
        image = Image.fromarray(rgb, mode="RGB")
    else:
        raise RenderingUnavailable()
    if max_pixels:
        image.thumbnail((max_pixels, max_pixels))
    out = io.BytesIO()
    image.save(out, format="PNG" if media_type == "image/png" else "JPEG", quality=90)
    return out.getvalue()


def _window(ds: Dataset, pixels: Any, invert: bool) -> Any:
    values = pixels.astype(np.float64)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0))
    values = values * slope + intercept
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 1:
        low, high = center - width / 2, center + width / 2
    else:
        low, high = float(values.min()), float(values.max())
    scaled = _to_uint8(values, low, high)
    return 255 - scaled if invert else scaled


def _to_uint8(values: Any, low: float, high: float) -> Any:
    span = high - low if high > low else 1.0
    return (np.clip((values - low) / span, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _first(value: Any) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


Renderer = Callable[[DicomFile, int, str, int | None], bytes]
