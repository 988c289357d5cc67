#!/usr/bin/env python3
"""Writes every module in dist/ as an OCI image layout under dist/oci/<filter>/, no Docker needed.

Images follow the Wasm image specification's "compat" variant, which Istio's WasmPlugin
(`oci://...`) and Envoy Gateway pull, and which every registry stores: exactly one standard
`application/vnd.oci.image.layer.v1.tar+gzip` layer holding `plugin.wasm`, and the manifest
annotation `module.wasm.image/variant: compat`. Version and git commit are OCI labels and
annotations. Output is deterministic: the same module gives the same digests.

Usage: oci.py VERSION COMMIT
"""

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"


def blob(layout: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def layer_tar(wasm: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(wasm), 0o644, 0
        tar.addfile(info, io.BytesIO(wasm))
    return raw.getvalue()


def write_image(module: Path, version: str, commit: str) -> Path:
    name = module.stem.replace("_", "-")
    layout = DIST / "oci" / name
    if layout.exists():
        for old in sorted(layout.rglob("*"), reverse=True):
            old.unlink() if old.is_file() else old.rmdir()
    layout.mkdir(parents=True, exist_ok=True)
    tar = layer_tar(module.read_bytes())
    layer = blob(layout, gzip.compress(tar, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
    labels = {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.description": f"wasmgate {name} Proxy-Wasm filter",
    }
    config = {
        "architecture": "wasm",
        "os": "wasip1",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
    }
    config_desc = blob(layout, json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer],
        "annotations": {"module.wasm.image/variant": "compat", **labels},
    }
    manifest_desc = blob(layout, json.dumps(manifest, sort_keys=True).encode(), manifest["mediaType"])
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": version}
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
    print(f"{layout.relative_to(ROOT)}:{version}  {manifest_desc['digest']}  ({layer['size']} bytes compressed)")
    return layout


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    version, commit = sys.argv[1], sys.argv[2]
    modules = sorted(DIST.glob("*.wasm"))
    if not modules:
        print("no modules in dist/: run `make build` first", file=sys.stderr)
        return 1
    for module in modules:
        write_image(module, version, commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
