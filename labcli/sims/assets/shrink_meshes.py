"""Shrink OBJ meshes: drop normals (MuJoCo recomputes them), merge duplicate vertices, round to 0.01 mm."""
import sys
from pathlib import Path


def shrink(path: Path) -> None:
    verts, index, vts, faces, other = [], {}, [], [], []
    remap = {}
    n_v = 0
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            n_v += 1
            key = tuple(f"{float(x):.5f}" for x in line.split()[1:4])
            if key not in index:
                index[key] = len(verts) + 1
                verts.append(key)
            remap[n_v] = index[key]
        elif line.startswith("vt "):
            vts.append(" ".join(f"{float(x):.4f}" for x in line.split()[1:3]))
        elif line.startswith("f "):
            out = []
            for corner in line.split()[1:]:
                parts = corner.split("/")
                v = remap[int(parts[0])]
                out.append(f"{v}/{parts[1]}" if vts and len(parts) > 1 and parts[1] else str(v))
            faces.append(out)
        elif line.startswith(("mtllib", "usemtl", "o ", "g ", "s ")):
            other.append(line)
    lines = [l for l in other if l.startswith("mtllib")]
    lines += ["v " + " ".join(k) for k in verts]
    lines += ["vt " + t for t in vts]
    for f in faces:
        if len({c.split("/")[0] for c in f}) == len(f):
            lines.append("f " + " ".join(f))
    path.write_text("\n".join(lines) + "\n")

for p in sys.argv[1:]:
    shrink(Path(p))
