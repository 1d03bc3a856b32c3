"""An on-disk index of unit vectors with one JSON record per vector; exact top-k search by default.

    index = Index.create("gallery.idx", encoder)            # records encoder.name / dim / fingerprint
    index.add_images(paths_or_folder, encoder)              # batches, a progress bar, unreadable files counted,
                                                            # files already indexed (path + content) left out
    index.add_texts(["a red circle", ...], encoder)
    Index.open("gallery.idx", encoder)                      # refuses another model or width, by name
    index.search(query_vectors, k=5, kind="image")          # scores (Q, k), rows (Q, k)

On disk (appendable: each add writes one more shard, nothing is rewritten):

    index.json                  {"model", "dim", "fingerprint", "shards": [...], "count"}
    vectors-00000.safetensors   {"vectors": (n0, E) float32}
    metadata.jsonl              one line per vector: {"kind": "image"|"text", "path" | "text", ...extra}

Exact search is one matmul + topk per chunk of rows; the running best k are merged chunk by chunk,
so the score matrix never exceeds (Q, chunk) however many vectors the index holds.
"""
import hashlib
import json
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load_file, save_file

from ..train.progress import ProgressBar

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
KINDS = ("image", "text")


class IndexMismatchError(ValueError):
    """An index opened with a model other than the one that built it."""


def list_images(folder):
    """The image files of a folder (sorted, not recursive); an error for a missing or empty folder."""
    folder = Path(folder)
    if folder.is_file():
        raise ValueError(f"expected a folder of images, {folder} is a file: put it in a folder of its own, or "
                         f"pass a list of paths to Index.add_images")
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder at {folder} (expected a folder of images; check the path)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"{folder} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


# Why a file was left out of add_images although it is readable: indexing a folder again must not
# append its images twice (every hit would then come back twice).
ALREADY_INDEXED = "already in the index (same path and content)"


def file_key(path, data):
    """What identifies an indexed image file: its absolute path and the sha256 of its bytes (a file
    changed since it was indexed is a new image)."""
    return str(Path(path).resolve()), hashlib.sha256(data).hexdigest()


def read_image(path):
    """RGB PIL image, or raise ValueError naming the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def topk_exact(queries, vectors, k, allowed=None, chunk=65536):
    """queries (Q, E), vectors (N, E) -> scores (Q, k'), rows (Q, k') with k' = min(k, allowed rows).
    `allowed` (N,) bool restricts the candidates. Chunked: memory O(Q * (chunk + k))."""
    n_allowed = vectors.shape[0] if allowed is None else int(allowed.sum())
    k = min(k, n_allowed)
    best_s = queries.new_full((queries.shape[0], 0), float("-inf"))
    best_i = torch.zeros((queries.shape[0], 0), dtype=torch.long)
    for start in range(0, vectors.shape[0], chunk):
        scores = queries @ vectors[start:start + chunk].t()  # (Q, C)
        if allowed is not None:
            scores = scores.masked_fill(~allowed[start:start + chunk], float("-inf"))
        s, i = scores.topk(min(k, scores.shape[1]), dim=1)
        s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i + start], 1)
        best_s, pick = s.topk(min(k, s.shape[1]), dim=1)  # merge: the k best of (old best, this chunk)
        best_i = i.gather(1, pick)
    return best_s, best_i


class Index:
    def __init__(self, root, header, vectors, records):
        self.root, self.header = Path(root), header
        self.vectors, self.records = vectors, records   # (N, E) float32, N dicts
        self.backend = None                               # None = exact; or an ANN backend (faiss_backend.py)

    # -- create / open ----------------------------------------------------------------------------

    @classmethod
    def create(cls, root, encoder, exist_ok=False):
        root = Path(root)
        if (root / "index.json").exists():
            if not exist_ok:
                raise FileExistsError(f"{root} already holds an index; open it to append (Index.open)")
            return cls.open(root, encoder)
        root.mkdir(parents=True, exist_ok=True)
        header = {"model": encoder.name, "dim": encoder.dim, "fingerprint": encoder.fingerprint,
                  "count": 0, "shards": []}
        (root / "metadata.jsonl").write_text("")
        index = cls(root, header, torch.zeros(0, encoder.dim), [])
        index._write_header()
        return index

    @classmethod
    def open(cls, root, encoder=None):
        """Load an index; with `encoder`, refuse it unless it was built by the same model and width."""
        root = Path(root)
        if not (root / "index.json").is_file():
            raise FileNotFoundError(f"no index at {root} (expected {root / 'index.json'}; build one with "
                                    f"`python -m minivlm index`)")
        header = json.loads((root / "index.json").read_text())
        if encoder is not None:
            check_compatible(header, encoder, root)
        parts = [load_file(root / s)["vectors"] for s in header["shards"]]
        vectors = torch.cat(parts) if parts else torch.zeros(0, header["dim"])
        lines = (root / "metadata.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        if not (len(records) == vectors.shape[0] == header["count"]):
            raise ValueError(f"{root} is inconsistent: {vectors.shape[0]} vectors, {len(records)} metadata lines, "
                             f"index.json says {header['count']}")
        return cls(root, header, vectors, records)

    def __len__(self):
        return len(self.records)

    @property
    def dim(self):
        return self.header["dim"]

    def _write_header(self):
        (self.root / "index.json").write_text(json.dumps(self.header, indent=1) + "\n")

    # -- add --------------------------------------------------------------------------------------

    def add(self, vectors, records):
        """Append unit vectors (n, E) with their n records (each a dict with "kind") as one new shard."""
        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        if vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (n, {self.dim}) for this index, got {tuple(vectors.shape)}")
        if len(records) != vectors.shape[0]:
            raise ValueError(f"{vectors.shape[0]} vectors but {len(records)} records")
        for r in records:
            if r.get("kind") not in KINDS:
                raise ValueError(f"each record needs kind in {KINDS}, got {r!r}")
        if not len(records):
            return 0
        shard = f"vectors-{len(self.header['shards']):05d}.safetensors"
        save_file({"vectors": vectors.contiguous()}, self.root / shard)
        with open(self.root / "metadata.jsonl", "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        self.header["shards"].append(shard)
        self.header["count"] += len(records)
        self._write_header()   # last: a crash before this leaves the old header, which ignores the new shard
        self.vectors = torch.cat([self.vectors, vectors])
        self.records.extend(records)
        self.backend = None     # an approximate structure built before no longer covers every row
        return len(records)

    def add_images(self, images, encoder, on_error="skip", batch_size=None, progress=True, extra=None):
        """Embed image files (a folder or a list of paths) and append them.

        on_error="skip": unreadable files are left out and returned, by path, with the reason;
        on_error="raise": any unreadable file refuses the whole batch before anything is written.
        A file already in the index (the same absolute path and bytes, file_key) is left out too, with
        the reason ALREADY_INDEXED. `extra` maps a path's str to more metadata for its record.
        Returns (added, skipped)."""
        check_compatible(self.header, encoder, self.root)
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if isinstance(images, (str, Path)):   # a folder (a path string is not a list of paths)
            paths = list_images(images)
        else:
            paths = [Path(p) for p in images]
        if not paths:
            raise ValueError("no images to add (an empty list)")
        batch_size = batch_size or encoder.batch_size
        indexed = {(str(Path(r["path"]).resolve()), r["sha256"]) for r in self.records
                   if r["kind"] == "image" and "sha256" in r}
        bar = ProgressBar(len(paths), desc="embedding images") if progress else None
        added, skipped, vectors, records = 0, [], [], []
        for start in range(0, len(paths), batch_size):
            good, pics = [], []
            for p in paths[start:start + batch_size]:
                try:
                    data = p.read_bytes()
                except OSError as e:
                    data, error = None, ValueError(f"cannot read image {p}: {e}")
                if data is not None:
                    key = file_key(p, data)
                    if key in indexed:
                        skipped.append((str(p), ALREADY_INDEXED))
                        continue
                    try:
                        pics.append(read_image(p))
                        good.append((p, key))
                        indexed.add(key)   # the same file twice in one list is indexed once
                        continue
                    except ValueError as e:
                        error = e
                if on_error == "raise":
                    raise error
                skipped.append((str(p), str(error)))
            if pics:
                vectors.append(encoder.embed_images(pics))
                records += [{"kind": "image", "path": str(p), "sha256": key[1], **((extra or {}).get(str(p), {}))}
                            for p, key in good]
            if bar:
                bar.update(min(start + batch_size, len(paths)), skipped=len(skipped))
        if vectors:
            added = self.add(torch.cat(vectors), records)
        unreadable = [why for _, why in skipped if why != ALREADY_INDEXED]
        if added == 0 and unreadable:
            raise ValueError(f"none of the {len(paths)} images could be read; first: {unreadable[0]}")
        return added, skipped

    def add_texts(self, texts, encoder, batch_size=None, progress=True, extra=None):
        """Embed strings and append them; `extra` is an optional list of dicts (one per text). Returns the count."""
        check_compatible(self.header, encoder, self.root)
        texts = list(texts)
        if not texts:
            raise ValueError("no texts to add (an empty list)")
        batch_size = batch_size or encoder.batch_size
        bar = ProgressBar(len(texts), desc="embedding texts") if progress else None
        vectors = []
        for start in range(0, len(texts), batch_size):
            vectors.append(encoder.embed_texts(texts[start:start + batch_size]))
            if bar:
                bar.update(min(start + batch_size, len(texts)))
        extra = extra or [{}] * len(texts)
        return self.add(torch.cat(vectors), [{"kind": "text", "text": t, **e} for t, e in zip(texts, extra)])

    # -- search -----------------------------------------------------------------------------------

    def kind_mask(self, kind):
        if kind is None:
            return None
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
        return torch.tensor([r["kind"] == kind for r in self.records], dtype=torch.bool)

    def search(self, queries, k=5, kind=None, chunk=65536):
        """queries (Q, E) unit vectors -> scores (Q, k), rows (Q, k), best first (cosine similarity).
        kind="image" / "text" searches only those rows. Exact unless an approximate backend is attached."""
        queries = torch.as_tensor(queries, dtype=torch.float32)
        if queries.dim() == 1:
            queries = queries[None]
        if queries.shape[-1] != self.dim:
            raise ValueError(f"query vectors have width {queries.shape[-1]}, this index holds width {self.dim} "
                             f"(model {self.header['model']!r})")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        allowed = self.kind_mask(kind)
        n = len(self) if allowed is None else int(allowed.sum())
        if n == 0:
            what = "vectors" if kind is None else f"{kind} vectors"
            raise ValueError(f"the index at {self.root} holds no {what} to search (it has {len(self)} in all)")
        if self.backend is not None:
            return self.backend.search(queries, k, kind)
        return topk_exact(queries, self.vectors, k, allowed, chunk)


def check_compatible(header, encoder, root):
    """Refuse an encoder other than the index's model (by name, width and weights)."""
    problems = []
    if header["model"] != encoder.name:
        problems.append(f"built with model {header['model']!r}, opened with {encoder.name!r}")
    if header["dim"] != encoder.dim:
        problems.append(f"vectors of width {header['dim']}, the encoder gives {encoder.dim}")
    if header.get("fingerprint") != encoder.fingerprint:
        problems.append(f"weights fingerprint {header.get('fingerprint')} vs the encoder's {encoder.fingerprint}")
    if problems:
        raise IndexMismatchError(f"index {root} does not belong to this encoder: {'; '.join(problems)}. "
                                 "Queries embedded by another model live in another space; rebuild the index "
                                 "with this model or open it with the one that built it.")
