"""Generates the Python stubs for proto/ohlora/v1 into ohlora/v1.

The stubs are committed so that users need no protoc; tests regenerate them into
a temporary folder and compare, so a .proto edit without regeneration fails CI.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
PACKAGE_DIR = Path("ohlora") / "v1"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Runs protoc (from grpcio-tools) and returns the generated files under out_root."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    out_dir = out_root / PACKAGE_DIR
    (out_dir / "__init__.py").write_text('"""Generated gRPC stubs for package ohlora.v1 (see proto/)."""\n')
    return sorted(p for p in out_dir.iterdir() if p.is_file())


def regenerate_in_place() -> None:
    """Regenerates the committed stubs in ohlora/v1."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copy(path, REPO_ROOT / PACKAGE_DIR / path.name)


if __name__ == "__main__":
    regenerate_in_place()
