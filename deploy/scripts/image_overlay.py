"""`make deploy`: write a throw-away overlay over K8S_OVERLAY that sets the image to
IMAGE:IMAGE_TAG (kustomize `images:`), so the variables reach the manifests without editing
the committed overlay.

    python deploy/scripts/image_overlay.py OVERLAY IMAGE TAG DIRECTORY

kustomize takes only relative paths to a base, so the overlay is named relative to DIRECTORY.
The override applies to the image the committed overlays call `shop-mesh` (kind keeps that
name; an overlay that renames it, like production, is left as it is).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

IMAGE_NAME = "shop-mesh"


def write_overlay(overlay: Path, image: str, tag: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    base = os.path.relpath(overlay.resolve(), directory.resolve())
    # JSON is YAML: every value quoted, whatever characters it holds.
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "images": [{"name": IMAGE_NAME, "newName": image, "newTag": tag}],
    }
    path = directory / "kustomization.yaml"
    path.write_text(json.dumps(kustomization, indent=2) + "\n")
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 64
    overlay, image, tag, directory = argv
    if ":" in image.rpartition("/")[2] or "@" in image:
        print(f"error: IMAGE={image} must be a name without a tag (use IMAGE_TAG)", file=sys.stderr)
        return 64
    write_overlay(Path(overlay), image, tag, Path(directory))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
