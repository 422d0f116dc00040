"""Offline rendering of a COCO-format dataset to a low-light copy (command line: ``datasets/prepare_lowlight_coco.py``).

Every image listed in the annotation JSON is read, degraded by a synthesis pipeline with a
random generator seeded from ``(seed, image id)`` (:func:`~wnlb_d2.data.synthesis.eval_rng`,
the COCO ``id`` of the image in the annotation JSON), and written under the output folder with
the same relative file name and format. The result depends only on the image, its id, the
pipeline, its overrides and the seed: not on the worker count, the order, or on how often the
run was interrupted and resumed.

The key is the one :class:`~wnlb_d2.data.mapper.LowLightDatasetMapper` uses for evaluation
(``dataset_dict["image_id"]``), and the JSON is copied unchanged, so the offline copy and the
normal-light set degraded on the fly are one test set: the same pixels for PNG (lossless)
outputs, whatever folder either is registered from. (A file name would not do: the mapper
only sees the absolute path, whose root differs between the two registrations.)

* Output format: PNG stays PNG (compression level ``png_compression``, lossless), JPEG stays
  JPEG at a fixed quality (``jpeg_quality``, default 95), BMP/TIFF stay BMP/TIFF. Images are
  written as 8-bit, 3-channel, EXIF orientation applied (what detectron2 reads), so the bytes
  are the same on every run.
* Atomic writes (:func:`wnlb_d2.utils.io.atomic_write`): each image is written to a
  temporary name in its own folder, then renamed over the final name, so a killed run never
  leaves a half-written image. Temporaries left by a killed run are removed by the next run.
* Resumable: an image is skipped when the manifest records it as done and its file still
  has the size and BLAKE2b hash recorded there; a file that was truncated, replaced or
  removed afterwards is rendered again (with a log line naming it).
* Manifest (JSON lines, default ``<output>/manifest.jsonl``): a header line with the pipeline,
  seed and overrides, then one line per image, ``{"file_name", "image_id", "status": "ok",
  "size": bytes, "blake2b": hex digest, "params": {sampled parameters}}`` or ``{"status": "failed", "error": ...}``. It is appended to
  while rendering and rewritten in the JSON's image order at the end. Resuming with another
  pipeline, seed or overrides is refused.
* Bad images (unreadable, truncated, unsupported extension) are counted, logged and recorded
  as failed; the rest is still rendered; the command exits non-zero at the end.
* The annotation JSON is reused as it is: copied byte for byte (default
  ``<output>/../annotations/<json name>``), last, and only when every image was rendered, so
  its presence marks a complete copy. Another file already at that path (one that differs from
  the source JSON) is never replaced: the run is refused before anything is written.
* A failed write (disk full, permission, read-only file system) stops the run with an
  :class:`OSError` that names the file (the manifest keeps what was done: a rerun resumes).
"""

import contextlib
import filecmp
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.allocator import tune_allocator
from ..utils.io import atomic_write_bytes, remove_stale_temporaries, writing
from .datasets.coco_instances import read_coco_json
from .datasets.paths import require_dir
from .image_io import ImageReadError, read_image
from .synthesis import build_pipeline, eval_rng, pipeline_names

__all__ = [
    "prepare_lowlight",
    "PrepareResult",
    "list_coco_images",
    "default_output_annotations",
    "SUPPORTED_EXTENSIONS",
    "MANIFEST_VERSION",
]

logger = logging.getLogger(__name__)

#: File extensions (lower case) that are rendered; others are recorded as failed.
SUPPORTED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Bumped when the manifest format or the rendering of a given (pipeline, seed) changes.
MANIFEST_VERSION = 2  # 2: seeded from the image id (1: the file name); size and hash per image

#: Images per task of a worker (fewer when the set is small): see :func:`_render_batch`.
BATCH_SIZE = 8


# Header keys that must agree between an existing manifest and a resumed run.
_RENDER_KEYS = (
    "version", "pipeline", "pipeline_config", "seed", "jpeg_quality", "png_compression",
)  # fmt: skip


@dataclass
class PrepareResult:
    """What a :func:`prepare_lowlight` run did.

    Attributes:
        total (int): images listed in the annotation JSON.
        rendered (int): images rendered by this run.
        skipped (int): images already done by an earlier run.
        failed (list[tuple[str, str]]): (file name, error) of the images that could not be
            rendered.
        complete (bool): every image is rendered (and the annotation copy, if asked, written).
        manifest (str): path of the manifest.
        output_annotations (str or None): path of the annotation copy, if written.
    """

    total: int
    rendered: int
    skipped: int
    failed: List[Tuple[str, str]] = field(default_factory=list)
    complete: bool = False
    manifest: str = ""
    output_annotations: Optional[str] = None


def list_coco_images(annotations):
    """The (image id, file name) pairs of a COCO-format JSON, checked for safe output paths.

    Args:
        annotations (str): path of the COCO JSON.

    Returns:
        list[tuple[int, str]]: in the JSON's order.

    Raises:
        FileNotFoundError: the JSON does not exist.
        ValueError: the JSON is corrupt or lists no images; an image lacks ``id`` or
            ``file_name``; a file name is absolute, leaves the folder (``..``) or repeats.
    """
    data = read_coco_json(annotations)
    images, seen = [], set()
    for img in data["images"]:
        if not isinstance(img, dict) or "file_name" not in img or "id" not in img:
            raise ValueError(f"{annotations}: image entry {img!r} lacks 'id' or 'file_name'.")
        name = img["file_name"]
        norm = os.path.normpath(name) if isinstance(name, str) and name else ""
        if not norm or os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep):
            raise ValueError(
                f"{annotations}: image {img['id']} has file_name {name!r}; expected a path "
                "relative to the image folder that stays inside it."
            )
        image_id = img["id"]
        # The id seeds the image's degradation (eval_rng takes an int or a str).
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
            raise ValueError(
                f"{annotations}: image {name!r} has id {image_id!r}; expected an int or a str."
            )
        if norm in seen:
            raise ValueError(f"{annotations}: file_name {name!r} is listed more than once.")
        seen.add(norm)
        images.append((img["id"], name))
    return images


def default_output_annotations(output, annotations):
    """``<output>/../annotations/<json file name>``: COCO's layout beside the image folder."""
    parent = os.path.dirname(os.path.abspath(output))
    return os.path.join(parent, "annotations", os.path.basename(annotations))


def _refuse_other_annotations(output_annotations, annotations):
    """Raise when ``output_annotations`` holds a file other than a copy of ``annotations``.

    The default destination, ``<output>/../annotations/<json name>``, can be a real annotation
    file of the dataset (e.g. an unfiltered COCO JSON with the same name): replacing it would lose
    it. A byte-identical copy (left by an earlier run of the same command) is fine.

    Raises:
        FileExistsError: another file (or a folder) is at ``output_annotations``.
    """
    if not output_annotations or not os.path.exists(output_annotations):
        return
    if os.path.isdir(output_annotations):
        raise FileExistsError(
            f"The annotation copy's destination {output_annotations} is a folder; pass "
            "--output-annotations with a file path."
        )
    if os.path.samefile(output_annotations, annotations):
        return
    if not filecmp.cmp(output_annotations, annotations, shallow=False):
        raise FileExistsError(
            f"{output_annotations} exists and differs from {annotations}: not replacing it (nothing "
            "was written). Pass --output-annotations with another path, or remove that file."
        )


def _json_default(obj):
    # Pipelines return plain Python types; NumPy scalars/arrays are converted if they slip in.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dumps(record):
    return json.dumps(record, sort_keys=True, default=_json_default)


def _encode(image, ext, jpeg_quality, png_compression):
    """Encode a uint8 HxWx3 BGR image in the format of ``ext``, with fixed parameters."""
    if ext == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    elif ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    else:
        params = []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode an image of shape {image.shape} as {ext}.")
    return buf.tobytes()


# Per-process state of the rendering workers (set by _init_worker).
_WORKER = {}


def _init_worker(settings):
    # No cv2.setNumThreads() here: in a forked child whose parent already ran a parallel
    # OpenCV call, it deadlocks (OpenCV's thread pool is not in the child).
    tune_allocator()  # image-sized arrays stay on the heap between images
    _WORKER.clear()
    _WORKER.update(settings)
    _WORKER["pipeline_fn"] = build_pipeline(settings["pipeline"], **settings["overrides"])


def _render_one(task):
    """Render one image; returns its manifest record, the output path and the encoded bytes (None
    for a failed record: bad input images are recorded, not raised)."""
    image_id, file_name = task
    record = {"file_name": file_name, "image_id": image_id}
    ext = os.path.splitext(file_name)[1].lower()
    src = os.path.join(_WORKER["images_dir"], file_name)
    if ext not in SUPPORTED_EXTENSIONS:
        return dict(record, status="failed", error=(
            f"unsupported extension {ext!r} of {src}; expected one of {SUPPORTED_EXTENSIONS}")), None, None
    try:
        image = read_image(src, format="BGR")
    except (ImageReadError, OSError) as e:
        return dict(record, status="failed", error=f"{type(e).__name__}: {e}"), None, None
    # Keyed by the image id, as LowLightDatasetMapper keys evaluation images: one test set
    # whether it is rendered here or degraded on the fly.
    rng = eval_rng(_WORKER["seed"], image_id)
    try:
        dark, params = _WORKER["pipeline_fn"](image, rng, input_format="BGR")
    except ValueError as e:  # an image the pipeline cannot take, e.g. smaller than 2x2
        return dict(record, status="failed", error=f"{src}: {e}"), None, None
    data = _encode(dark, ext, _WORKER["jpeg_quality"], _WORKER["png_compression"])
    dst = os.path.join(_WORKER["output_dir"], file_name)
    return dict(record, status="ok", size=len(data), blake2b=_digest(data), params=params), dst, data


def _write_image(dst, data):
    """Write one rendered image atomically (and durably, when asked), naming it in an OSError."""
    with writing(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        atomic_write_bytes(dst, data, durable=_WORKER["durable"])


def _render_batch(tasks):
    """Render ``tasks`` in order; returns their manifest records once every image is written.

    Each image is written (temporary, fsync when durable, rename: the same guarantees as one at
    a time) by a background thread while the next one renders: the fsync is a wait for the disk
    (4-7 ms per image here, half the rendering time of an lv2021 image), which would otherwise
    leave the worker's core idle. The thread only makes system calls, which release the GIL.
    The batch returns after its last write, so no write outlives it (a pool worker's threads are
    not waited for when it exits), and a failed write raises here, naming the file.
    """
    records, writes = [], []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wnlb-prepare-write") as writer:
        for task in tasks:
            record, dst, data = _render_one(task)
            if data is not None:
                writes.append(writer.submit(_write_image, dst, data))
            records.append(record)
        for w in writes:
            w.result()
    return records


def _digest(data):
    """The BLAKE2b (128-bit) hex digest of an output image's bytes, recorded in the manifest."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _file_matches(path, rec):
    """Why the rendered file ``path`` does not match its manifest record, or None if it does."""
    if not os.path.isfile(path):
        return "the file is missing"
    if "size" not in rec or "blake2b" not in rec:
        return "the manifest records no size and hash for it"
    size = os.path.getsize(path)
    if size != rec["size"]:  # cheap check first: a truncated file is caught without hashing
        return f"it has {size} bytes, the manifest records {rec['size']}"
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != rec["blake2b"]:
        return "its BLAKE2b hash differs from the manifest's"
    return None


class _Manifest:
    """The JSON-lines manifest: header line + one record per image (the last one wins)."""

    def __init__(self, path, header):
        self.path = path
        self.header = header
        self.records = {}

    def load(self):
        """Read an existing manifest; refuse it if it was made with other render settings."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            raw = f.read()
        # A run killed while appending can leave a partial last line: drop it, so the next
        # appended record starts on a line of its own.
        end = raw.rfind(b"\n") + 1
        if end < len(raw):
            logger.warning(f"{self.path}: dropping an incomplete last line (interrupted run).")
            with writing(self.path), open(self.path, "r+b") as f:
                f.truncate(end)
        lines = raw[:end].decode("utf-8").splitlines()
        if not lines:
            return
        try:
            header = json.loads(lines[0])
            records = [json.loads(line) for line in lines[1:] if line.strip()]
        except json.JSONDecodeError as e:
            raise ValueError(
                f"Manifest {self.path} is not valid JSON lines ({e}); delete it (or pass "
                "--overwrite) to render every image again."
            ) from e
        old = {k: header.get(k) for k in _RENDER_KEYS}
        new = {k: self.header.get(k) for k in _RENDER_KEYS}
        if old != new:
            raise ValueError(
                f"{os.path.dirname(self.path) or '.'} holds images rendered with {old}, but this "
                f"run asks for {new}. Use another --output, or --overwrite to render all again."
            )
        for rec in records:
            self.records[rec["file_name"]] = rec

    def start(self, fresh):
        """Open for appending; a fresh manifest starts with the header line."""
        with writing(self.path):
            if fresh or not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                with open(self.path, "w") as f:
                    f.write(_dumps(self.header) + "\n")
            self._file = open(self.path, "a")

    def append(self, records):
        """Record images done (a batch: one write and one flush)."""
        for record in records:
            self.records[record["file_name"]] = record
        with writing(self.path):
            self._file.write("".join(_dumps(record) + "\n" for record in records))
            self._file.flush()

    def close(self):
        """Close the appended file; a line that cannot be flushed any more (disk full) is dropped:
        the next run drops a partial last line and renders that image again."""
        f, self._file = getattr(self, "_file", None), None
        if f is not None:
            with writing(self.path):
                f.close()

    def abandon(self):
        """Close after a failure, without raising: the error being reported is the first one."""
        with contextlib.suppress(OSError):
            self.close()

    def finalize(self, file_names):
        """Rewrite the manifest in the JSON's image order (same bytes however it was run)."""
        self.close()
        lines = [_dumps(self.header)]
        lines += [_dumps(self.records[n]) for n in file_names if n in self.records]
        with writing(self.path):
            atomic_write_bytes(self.path, ("\n".join(lines) + "\n").encode("utf-8"), durable=True)


def _relpath(path, manifest_path):
    try:
        return os.path.relpath(path, os.path.dirname(os.path.abspath(manifest_path)))
    except ValueError:  # another drive (Windows)
        return os.path.abspath(path)


def prepare_lowlight(
    images_dir,
    annotations,
    output_dir,
    *,
    pipeline="lv2021",
    seed=0,
    workers=1,
    overrides=None,
    manifest=None,
    output_annotations=None,
    jpeg_quality=95,
    png_compression=3,
    limit=None,
    overwrite=False,
    progress=True,
    durable=True,
):
    """Render every image of a COCO-format dataset to a low-light copy.

    Args:
        images_dir (str): folder that the JSON's ``file_name`` are relative to.
        annotations (str): the COCO-format JSON.
        output_dir (str): where the low-light images go (same relative names).
        pipeline (str): a registered pipeline name (:func:`wnlb_d2.data.synthesis.pipeline_names`).
        seed (int): seed of the per-image generators (``eval_rng(seed, image_id)``).
        workers (int): processes; 1 renders in this process.
        overrides (dict or None): keyword arguments for ``build_pipeline`` (parameter ranges).
        manifest (str or None): manifest path; default ``<output_dir>/manifest.jsonl``.
        output_annotations (str or None): where to copy the JSON when every image is done;
            None: no copy.
        jpeg_quality (int): JPEG quality 0-100 of ``.jpg``/``.jpeg`` outputs.
        png_compression (int): PNG compression level 0-9 (lossless at every level).
        limit (int or None): consider only the first ``limit`` images of the JSON.
        overwrite (bool): render every image again, ignoring earlier output.
        progress (bool): show a tqdm progress bar.
        durable (bool): fsync every image before its rename (safe against power cuts; a
            killed process never leaves a partial file either way). The writes run in a
            thread of each worker while the next image renders, so the wait costs no time.

    Returns:
        PrepareResult

    Raises:
        FileNotFoundError: the image folder or the JSON does not exist.
        ValueError: corrupt or empty JSON, unsafe file names, output folder equal to the
            image folder or an existing file, bad settings, or a manifest made with other
            settings.
        FileExistsError: ``output_annotations`` holds another file than a copy of the JSON
            (checked before anything is written).
        OSError: a file could not be written (disk full, permission); the error names it.
    """
    if pipeline not in pipeline_names():
        raise ValueError(f"Unknown pipeline {pipeline!r}; expected one of {pipeline_names()}.")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    if not 0 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 0..100, got {jpeg_quality}.")
    if not 0 <= png_compression <= 9:
        raise ValueError(f"png_compression must be in 0..9, got {png_compression}.")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}.")
    require_dir(images_dir, "Image folder (--images)")
    images = list_coco_images(annotations)
    if os.path.realpath(output_dir) == os.path.realpath(images_dir):
        raise ValueError(
            f"The output folder {output_dir} is the image folder: the low-light copy would "
            "overwrite the originals. Choose another --output."
        )
    # JSON round trip: the header compares equal to the one read back when resuming
    # (tuples become lists).
    overrides = json.loads(_dumps(dict(overrides or {})))
    try:
        built = build_pipeline(pipeline, **overrides)  # fail now, not in every worker
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"Cannot build pipeline {pipeline!r} with overrides {overrides}: {e}") from e

    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"The output {output_dir} is a file; expected a folder (new or existing) for --output.")
    _refuse_other_annotations(output_annotations, annotations)
    os.makedirs(output_dir, exist_ok=True)
    remove_stale_temporaries(output_dir, recursive=True)
    manifest_path = manifest or os.path.join(output_dir, "manifest.jsonl")
    header = {
        "manifest": "wnlb_d2 low-light rendering",
        "version": MANIFEST_VERSION,
        "pipeline": pipeline,
        "seed": int(seed),
        "overrides": overrides,
        # Every parameter range, defaults included: resuming after the defaults changed is refused.
        "pipeline_config": json.loads(_dumps(built.config())),
        "jpeg_quality": int(jpeg_quality),
        "png_compression": int(png_compression),
        # Relative to the manifest's folder: the output can move with its source, and the
        # manifest bytes do not depend on where the data lives.
        "source_images": _relpath(images_dir, manifest_path),
        "source_annotations": _relpath(annotations, manifest_path),
    }
    book = _Manifest(manifest_path, header)
    if overwrite:
        if os.path.exists(manifest_path):
            os.remove(manifest_path)
    else:
        book.load()

    considered = images if limit is None else images[:limit]
    todo, skipped = [], 0
    for image_id, name in considered:
        rec = book.records.get(name)
        if rec and rec.get("status") == "ok":
            why = _file_matches(os.path.join(output_dir, name), rec)
            if why is None:
                skipped += 1
                continue
            logger.warning(f"Rendering {os.path.join(output_dir, name)} again: {why}.")
        todo.append((image_id, name))
    logger.info(
        f"{len(images)} images in {annotations}: {skipped} already rendered, {len(todo)} to "
        f"render with pipeline {pipeline!r}, seed {seed}, {workers} worker(s)."
    )

    settings = {
        "images_dir": images_dir,
        "output_dir": output_dir,
        "pipeline": pipeline,
        "overrides": overrides,
        "seed": int(seed),
        "jpeg_quality": int(jpeg_quality),
        "png_compression": int(png_compression),
        "durable": bool(durable),
    }
    result = PrepareResult(total=len(images), rendered=0, skipped=skipped, manifest=manifest_path)
    book.start(fresh=overwrite)
    pool = None
    try:
        # Batches of a few images per task: their writes overlap their rendering
        # (_render_batch), and the parent gets one message per batch. With several workers,
        # small enough that they still share the last images evenly.
        size = BATCH_SIZE if workers == 1 else max(1, min(BATCH_SIZE, len(todo) // (workers * 4)))
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]
        if workers == 1 or len(todo) <= 1:
            _init_worker(settings)
            results = map(_render_batch, batches)
        else:
            from ..utils.pool import process_pool

            pool = process_pool(workers, _init_worker, (settings,))
            results = pool.imap_unordered(_render_batch, batches, chunksize=1)
        with tqdm(
            total=len(considered), initial=skipped, desc="low-light", unit="img", disable=not progress
        ) as bar:
            for records in results:
                book.append(records)
                bar.update(len(records))
                for rec in records:
                    if rec["status"] == "ok":
                        result.rendered += 1
                    else:
                        result.failed.append((rec["file_name"], rec["error"]))
                        logger.warning(f"Failed: {rec['file_name']}: {rec['error']}")
        if pool is not None:
            pool.close()
            pool.join()
    except BaseException:
        if pool is not None:
            pool.terminate()
        book.abandon()
        raise
    book.finalize([name for _, name in images])

    done = sum(
        1 for _, n in images if book.records.get(n, {}).get("status") == "ok"
    )
    result.complete = done == len(images)
    if result.failed:
        shown = "; ".join(f"{n}: {e}" for n, e in result.failed[:5])
        logger.error(
            f"{len(result.failed)} of {len(images)} images could not be rendered (listed as "
            f"failed in {manifest_path}): {shown}{' ...' if len(result.failed) > 5 else ''}"
        )
    if result.complete and output_annotations:
        if os.path.exists(output_annotations) and os.path.samefile(output_annotations, annotations):
            logger.info(f"{output_annotations} is the source annotation file itself; not copied.")
        else:
            _refuse_other_annotations(output_annotations, annotations)  # one may have appeared since
            with open(annotations, "rb") as f:
                data = f.read()
            with writing(output_annotations):
                os.makedirs(os.path.dirname(os.path.abspath(output_annotations)), exist_ok=True)
                atomic_write_bytes(output_annotations, data, durable=True)
        result.output_annotations = output_annotations
    elif output_annotations:
        logger.info(
            f"Not writing {output_annotations} yet: {len(images) - done} images are not rendered "
            "(run the command again to resume)."
        )
    logger.info(
        f"Rendered {result.rendered}, skipped {result.skipped} (done before), failed "
        f"{len(result.failed)}; {done}/{len(images)} images done. Manifest: {manifest_path}"
    )
    return result
