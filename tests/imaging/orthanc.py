"""A real Orthanc with its DICOMweb plugin (Debian ``orthanc`` + ``orthanc-dicomweb``), started
on free HTTP and DICOM ports with a temporary storage directory, basic auth on.

Skips when Orthanc or the plugin is missing (fails under ``NOVAZA_TEST_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port, need, need_tool

PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/lib/x86_64-linux-gnu/orthanc/plugins/libOrthancDicomWeb.so*",
)


def dicomweb_plugin() -> str:
    """The plugin's shared object, where Debian puts it (``dpkg -L orthanc-dicomweb``)."""
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    if shutil.which("dpkg"):
        listed = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False
        ).stdout.split()
        for path in listed:
            if "libOrthancDicomWeb.so" in path and Path(path).is_file():
                return path
    need(False, "the Orthanc DICOMweb plugin is not installed (Debian orthanc-dicomweb)")
    raise AssertionError("unreachable")


@dataclass
class Orthanc:
    url: str  # http://127.0.0.1:PORT
    username: str
    password: str
    dicom_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def client(self) -> httpx.Client:
        """Straight to Orthanc, as a DICOMweb client would talk to it without the gateway."""
        return httpx.Client(base_url=self.dicomweb, auth=(self.username, self.password), timeout=60)

    def settings(self, **overrides: str) -> dict[str, str]:
        """A tenant's ``imaging`` settings section proxying to this Orthanc."""
        return {
            "mode": "proxy",
            "upstreamUrl": self.dicomweb,
            "upstreamUsername": self.username,
            "upstreamPassword": self.password,
            **overrides,
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@contextmanager
def run_orthanc(workdir: Path, name: str = "novaza-test") -> Iterator[Orthanc]:
    binary = need_tool("Orthanc" if shutil.which("Orthanc") else "/usr/sbin/Orthanc")
    plugin = dicomweb_plugin()
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    username, password = "novaza", f"pw-{name}-{http_port}"
    config = {
        "Name": name,
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "NOVAZATEST",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {username: password},
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "SaveJobs": False,
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = workdir / "orthanc.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, str(config_path)], stdout=out, stderr=subprocess.STDOUT, cwd=workdir
        )
    orthanc = Orthanc(f"http://127.0.0.1:{http_port}", username, password, dicom_port, process, log)
    try:
        _wait_ready(orthanc)
        yield orthanc
    finally:
        orthanc.stop()


def _wait_ready(orthanc: Orthanc) -> None:
    deadline = time.monotonic() + 30
    while True:
        if orthanc.process.poll() is not None:
            raise AssertionError(f"Orthanc exited: {orthanc.log.read_text()[-2000:]}")
        try:
            answer = httpx.get(
                f"{orthanc.url}/plugins", auth=(orthanc.username, orthanc.password), timeout=2
            )
            if answer.status_code == 200 and "dicom-web" in answer.text:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"Orthanc did not start: {orthanc.log.read_text()[-2000:]}")
        time.sleep(0.1)
