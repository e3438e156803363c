"""DICOM test material: the files pydicom ships, files generated here, multipart bodies."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

SHIPPED = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG-lossy.dcm", "SC_rgb_small_odd.dcm")


def shipped(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom does not ship {name}"
    return Path(str(path))


def shipped_bytes(name: str) -> bytes:
    return shipped(name).read_bytes()


def uid() -> str:
    return generate_uid()


def make_instance(
    *,
    study: str,
    series: str | None = None,
    sop: str | None = None,
    patient_id: str = "PAT-1",
    patient_name: str = "Doe^John",
    study_date: str = "20240105",
    study_time: str = "101500",
    accession: str = "ACC-1",
    modality: str = "OT",
    description: str = "Generated study",
    referring: str = "Welby^Marcus",
    rows: int = 8,
    columns: int = 8,
    frames: int = 1,
    instance_number: int = 1,
    samples: int = 1,
) -> bytes:
    """A small Secondary Capture image (16-bit grayscale or 8-bit RGB), native pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop or uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series or uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.StudyDescription = description
    ds.ReferringPhysicianName = referring
    ds.StudyID = "1"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    if samples == 3:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        dtype: type = np.uint8
    else:
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        dtype = np.uint16
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    shape = (frames, rows, columns, samples)
    pixels = (np.arange(np.prod(shape)) * 7 % 4096).astype(dtype).reshape(shape)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: list[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = f"b-{uuid.uuid4().hex}"
    body = b""
    for data in parts:
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """A multipart answer's parts (headers, data), parsed independently of the gateway's code."""
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    parts = []
    for chunk in body.split(f"--{boundary}".encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().strip().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, data.removesuffix(b"\r\n")))
    return parts


def streamed_stow(
    study: str, series: str, count: int, boundary: str
) -> tuple[Iterator[bytes], str]:
    """A STOW body of ``count`` 2 MiB instances made from one template as it is sent, so the
    sender holds one part at a time; and its content type."""
    template_sop = "1.2.826.0.1.3680043.9.7.1.10000000000000000000"
    template = make_instance(study=study, series=series, sop=template_sop, rows=1024, columns=1024)

    def body() -> Iterator[bytes]:
        for i in range(count):
            sop = f"{template_sop[:-20]}1{i + 1:019d}"  # same length: the file stays valid
            data = template.replace(template_sop.encode(), sop.encode())
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            for start in range(0, len(data), 64 * 1024):
                yield data[start : start + 64 * 1024]
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return body(), f'multipart/related; type="application/dicom"; boundary={boundary}'
