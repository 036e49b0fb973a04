"""Prepare ABID: raw ``bin-images/`` + ``metadata/`` -> ``<output>/{train,val,test}/<count>/<name>.jpg``.

Source and output are each a local folder or an ``s3://`` prefix (see ``storage``). The job reads
every selected metadata JSON, keeps counts ``0..max_count`` (with ``overflow=True`` also the bins
holding more, as one extra class in the folder ``6plus`` for max_count 5; with ``max_count=None``
every count, each in its own folder ``<split>/<count>/``), assigns splits (``split``: stratified by
count; with every count, counts above 5 with fewer than ``min_stratum`` images are pooled for
stratifying in the buckets 6-10, 11-20 and 21+, ``split.count_strata``), then copies
(or resizes) the images with a pool of threads. Every image write is atomic, images already in the
output are skipped, so a killed job resumes where it stopped and a finished one reruns without
writing anything. Items that cannot be used are skipped and listed in ``rejects.csv`` with a reason.

Besides the images the output holds ``manifest.json`` (``{split: {count: [names]}}``),
``splits.csv`` (name, count, split; also the record that keeps splits stable when the job is rerun
on a grown source), ``stats.json``, ``rejects.csv``, ``class_distribution.png`` and
``prepare.json`` (the settings the stored images were made with).

Several instances can share one job (``shard``): every instance reads all the metadata and decides
the same splits (they depend on the metadata only), then copies only the images it owns
(``split.shard_of``: a stable hash of the name), so no two instances write the same object. Rank 0
alone writes the summary files; an instance that rejects images it owns lists them in its own
``rejects-shard-<rank>-of-<n>.csv`` (rank 0 cannot see them).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from src.data.abid import (
    IMAGE_DIR,
    METADATA_DIR,
    BadItem,
    check_jpeg,
    check_name,
    image_key,
    metadata_key,
    parse_count,
    parse_id_list,
    resize_jpeg,
    target_size,
)
from src.data.jsonl_shards import LINES_PER_SHARD, Shards, shard_folder, write_shards
from src.data.layout import SPLITS, overflow_folder
from src.data.split import ALWAYS_OWN_STRATUM, MIN_STRATUM, assign_splits, check_fractions, count_strata, shard_of
from src.data.storage import LocalStore, Missing, open_store, read_uri, write_if_changed

log = logging.getLogger(__name__)

# Settings baked into the stored images: a rerun with other values would mix two datasets.
LOCKED_SETTINGS = ("seed", "fractions", "resize", "jpeg_quality")
# max_count spelled as text that means "every count" (Hydra reads max_count=None as the text "None").
ALL_COUNTS = ("all", "null", "none")
# A SageMaker Processing job tells each instance who it is here (hosts in rank order).
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"
RESOURCE_CONFIG_ENV = "BINCOUNT_RESOURCE_CONFIG"  # another path (local stand-ins, tests)


def resolve_shard(shard: str | None) -> tuple[int, int]:
    """``None`` -> (0, 1); ``"i/n"`` -> (i, n); ``"auto"`` -> this instance's rank and the host count
    from the Processing job's resource config ((0, 1) where there is none: a local run)."""
    if shard is None or str(shard).lower() in ("", "none", "null"):
        return 0, 1
    text = str(shard).strip()
    if text == "auto":
        path = os.environ.get(RESOURCE_CONFIG_ENV, RESOURCE_CONFIG)
        try:
            config = json.loads(open(path).read())
        except FileNotFoundError:
            return 0, 1
        hosts = list(config["hosts"])
        return hosts.index(config["current_host"]), len(hosts)
    rank, sep, count = text.partition("/")
    if sep and rank.isdigit() and count.isdigit() and 0 <= int(rank) < int(count):
        return int(rank), int(count)
    raise ValueError(f"shard={shard!r}: give null, auto (SageMaker Processing) or i/n with 0 <= i < n, e.g. 0/4")


class NothingUsable(RuntimeError):
    """No image of the selection could be prepared."""


@dataclass
class Report:
    """What a run found and did."""

    dataset: dict[str, tuple[int, str]]  # name -> (class, split); class max_count + 1: overflow
    rejects: list[tuple[str, str, str]]  # (name, reason, detail)
    above_max_count: int = 0
    written: int = 0
    existing: int = 0
    pruned: list[str] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0
    max_count: int | None = None  # set with overflow: class max_count + 1 is shown as its folder name
    transform_shards: Shards | None = None  # the test split's JSON-lines shards this instance wrote

    def folder(self, c: int) -> str:
        """The class folder (and label in summaries) of class index ``c``."""
        return overflow_folder(self.max_count) if self.max_count is not None and c > self.max_count else str(c)

    def table(self) -> str:
        """Images per count and split, as a small text table."""
        counts = Counter(self.dataset.values())
        lines = ["count " + "".join(f"{s:>8}" for s in SPLITS) + f"{'total':>8}"]
        for c in sorted({c for c, _ in self.dataset.values()}):
            row = [counts[(c, s)] for s in SPLITS]
            lines.append(f"{self.folder(c):>5} " + "".join(f"{n:>8}" for n in row) + f"{sum(row):>8}")
        totals = [sum(n for (_, s), n in counts.items() if s == split) for split in SPLITS]
        lines.append("  all " + "".join(f"{n:>8}" for n in totals) + f"{sum(totals):>8}")
        return "\n".join(lines)


def _parallel(fn: Callable[[Any], Any], items: list, workers: int, desc: str, progress: bool) -> list:
    """``[fn(x) for x in items]`` on ``workers`` threads with a progress bar; few tasks in flight at once."""
    from tqdm.auto import tqdm

    results: list = [None] * len(items)
    todo = iter(enumerate(items))
    interactive = sys.stderr.isatty()
    with (
        ThreadPoolExecutor(max(1, workers)) as pool,
        tqdm(
            total=len(items), desc=desc, unit="img", disable=not progress, mininterval=0.5 if interactive else 30
        ) as bar,
    ):
        pending = {pool.submit(fn, x): i for i, x in islice(todo, 4 * max(1, workers))}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                results[pending.pop(future)] = future.result()
                bar.update()
                for i, x in islice(todo, 1):
                    pending[pool.submit(fn, x)] = i
    return results


def _select(source, ids: str | None, ids_format: str, unsigned) -> tuple[list[str], list[tuple[str, BadItem]]]:
    """Names to consider: those in the ids file, or every image or metadata file under the source."""
    if ids:
        if os.path.isdir(ids):  # a Processing input folder holding the one ids file
            files = sorted(p for p in os.listdir(ids) if os.path.isfile(os.path.join(ids, p)))
            if len(files) != 1:
                raise FileNotFoundError(f"ids folder {ids} holds {len(files)} files; expected exactly one ids file")
            ids = os.path.join(ids, files[0])
        try:
            text = read_uri(ids, unsigned).decode("utf-8-sig")
        except (Missing, FileNotFoundError) as err:
            raise FileNotFoundError(
                f"ids file {ids} not found; give a file of ids or names, or ids=null for all"
            ) from err
        return parse_id_list(text, ids_format)
    found: dict[str, None] = {}
    for folder, ext in ((IMAGE_DIR, ".jpg"), (METADATA_DIR, ".json")):
        for key in sorted(source.list(folder + "/")):
            if key.endswith(ext):
                found[key[len(folder) + 1 : -len(ext)]] = None
    names, bad = [], []
    for name in found:
        try:
            check_name(name)
            names.append(name)
        except BadItem as err:
            bad.append((name, err))
    return names, bad


def _read_count(source, name: str) -> int | BadItem:
    try:
        return parse_count(source.read(metadata_key(name)))
    except Missing:
        return BadItem("metadata missing", metadata_key(name))
    except BadItem as err:
        return err
    except Exception as err:  # network or permission trouble: skip now, a rerun retries it
        return BadItem("metadata unreadable", f"{type(err).__name__}: {err}")


def _image_task(source, output, existing: set[str], resize, jpeg_quality: int, dry_run: bool, folder=str):
    """Build the per-image job: returns ``"written"``, ``"existing"`` or a BadItem."""

    def run(item: tuple[str, int, str]) -> str | BadItem:
        name, count, split = item
        key = f"{split}/{folder(count)}/{name}.jpg"
        if key in existing:
            return "existing"
        try:
            data = source.read(image_key(name))
        except Missing:
            return BadItem("image missing", image_key(name))
        except Exception as err:
            return BadItem("image unreadable", f"{type(err).__name__}: {err}")
        try:
            size = check_jpeg(data)
            if target_size(size, resize) is not None:
                data = resize_jpeg(data, resize, jpeg_quality)
        except BadItem as err:
            return err
        if not dry_run:
            output.write(key, data)
        return "written"

    return run


def _csv(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def stats_of(report: Report, settings: Mapping[str, Any]) -> dict[str, Any]:
    counts = Counter(report.dataset.values())
    classes = sorted({c for c, _ in report.dataset.values()})
    per_class = {}
    for c in classes:
        row = {s: counts[(c, s)] for s in SPLITS}
        per_class[report.folder(c)] = {**row, "total": sum(row.values())}
    return {
        "images": len(report.dataset),
        "per_class": per_class,
        "per_split": {s: sum(n for (_, split), n in counts.items() if split == s) for s in SPLITS},
        "above_max_count": report.above_max_count,
        "rejects": dict(sorted(Counter(reason for _, reason, _ in report.rejects).items())),
        "settings": dict(settings),
    }


def plot_distribution(stats: Mapping[str, Any]) -> bytes:
    """Stacked bars of images per count and split (PNG bytes; Agg canvas, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = list(stats["per_class"])
    classes = list(range(len(labels)))
    fig = Figure(figsize=(6, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bottom = [0] * len(classes)
    for split in SPLITS:
        heights = [stats["per_class"][c][split] for c in labels]
        ax.bar(classes, heights, bottom=bottom, label=split)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for x, total in zip(classes, bottom, strict=True):
        ax.annotate(str(total), (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(classes, labels)
    ax.set_xlabel("objects in bin (EXPECTED_QUANTITY)")
    ax.set_ylabel("images")
    ax.set_title(f"ABID images per count: {stats['images']} kept, {stats['above_max_count']} above max_count")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def summary_files(report: Report, stats: Mapping[str, Any], plot: bool = True) -> dict[str, bytes]:
    """The non-image outputs, as bytes: manifest, splits, stats, rejects and the class plot."""
    manifest: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for name, (count, split) in sorted(report.dataset.items()):
        manifest[split].setdefault(count, []).append(name)
    manifest = {s: {report.folder(c): m[c] for c in sorted(m)} for s, m in manifest.items()}
    rows = ((name, report.folder(count), split) for name, (count, split) in sorted(report.dataset.items()))
    files = {
        "manifest.json": _json(manifest),
        "splits.csv": _csv(["name", "count", "split"], rows),
        "stats.json": _json(stats),
        "rejects.csv": _csv(["name", "reason", "detail"], report.rejects),
    }
    if plot and report.dataset:
        files["class_distribution.png"] = plot_distribution(stats)
    return files


def _read_splits(store_or_uri, key: str | None = None, unsigned="auto") -> dict[str, str]:
    """name -> split from an earlier run's ``splits.csv``; empty when there is none."""
    try:
        data = store_or_uri.read(key) if key else read_uri(store_or_uri, unsigned)
    except (Missing, FileNotFoundError):
        if key:
            return {}
        raise FileNotFoundError(f"previous_splits file {store_or_uri} not found") from None
    rows = csv.DictReader(io.StringIO(data.decode()))
    if not rows.fieldnames or not {"name", "split"} <= set(rows.fieldnames):
        raise ValueError(f"{store_or_uri} {key or ''} is not a splits.csv (columns name,count,split)")
    return {row["name"]: row["split"] for row in rows if row["split"] in SPLITS}


def _check_locked(output, settings: Mapping[str, Any]) -> bool:
    """Refuse an output made with other image-shaping settings; True when prepare.json is already there."""
    try:
        before = json.loads(output.read("prepare.json"))
    except Missing:
        return False
    changed = {k: (before.get(k), settings[k]) for k in LOCKED_SETTINGS if before.get(k) != settings[k]}
    if changed:
        desc = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
        raise ValueError(
            f"output {output.uri} was prepared with other settings ({desc}). Use a new output folder, "
            "delete this one, or rerun with the earlier values."
        )
    return True


def prepare(
    source: str = "s3://aft-vbi-pds",
    output: str = "data/abid",
    ids: str | None = None,
    ids_format: str = "auto",
    max_count: int | None = 5,
    fractions: Mapping[str, float] | None = None,
    seed: int = 42,
    resize: int | list[int] | None = None,
    jpeg_quality: int = 90,
    workers: int = 8,
    dry_run: bool = False,
    unsigned: bool | str = "auto",
    previous_splits: str | None = None,
    prune: bool = True,
    plot: bool = True,
    progress: bool = True,
    shard: str | None = None,
    overflow: bool = False,
    transform_shards: bool = False,
    transform_shard_lines: int = LINES_PER_SHARD,
    min_stratum: int = MIN_STRATUM,
) -> Report:
    """Prepare ``source`` into ``output``; see the module docstring. Raises NothingUsable when nothing is left.

    ``shard``: ``None`` (this process does everything), ``"i/n"`` or ``"auto"`` (see ``resolve_shard``).
    ``max_count``: ``None`` (or ``"all"``; ``"null"``/``"None"`` as a launcher may render it) keeps
    every count as its own class folder (the all-count layout).
    ``min_stratum``: a count above 5 with fewer images is stratified in a pooled bucket (``split``).
    ``transform_shards``: also pack the test images this instance placed into JSON-lines shards,
    ``transform_shard_lines`` lines each, under ``test_jsonl/`` (``src.data.jsonl_shards``).
    """
    start = time.perf_counter()
    rank, shards = resolve_shard(shard)
    fractions = check_fractions(fractions or {"train": 0.64, "val": 0.16, "test": 0.20})
    if resize is not None and not isinstance(resize, int):
        resize = [int(v) for v in resize]
    target_size((1, 1), resize)  # validates the value before any I/O
    if isinstance(max_count, str) and max_count.strip().lower() in ALL_COUNTS:
        max_count = None  # as a launcher or a shell may spell it
    if max_count is not None and (isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 0):
        raise ValueError(f"max_count must be an integer >= 0, or null for every count, got {max_count!r}")
    if max_count is None and overflow:
        raise ValueError("overflow=true lumps the counts above max_count into one class, and max_count=null keeps "
                         "every count as its own: give max_count (e.g. 5) with overflow=true, or drop overflow")
    settings = {
        "source": str(source), "ids": ids, "max_count": max_count, "seed": seed,
        "fractions": fractions, "resize": resize, "jpeg_quality": jpeg_quality,
    }  # fmt: skip
    if overflow:  # only then, so stats.json of a plain preparation reads as before
        settings["overflow"] = True
    pooled = max_count is None or max_count > ALWAYS_OWN_STRATUM  # only then can a stratum be pooled
    if pooled:
        count_strata({}, min_stratum)  # validates min_stratum before any I/O
        settings["min_stratum"] = min_stratum
    src = open_store(source, unsigned, max_pool_connections=workers)
    out = open_store(output, unsigned=False, max_pool_connections=workers)
    if not dry_run:
        out.remove_temp_files()
    has_settings = _check_locked(out, settings)

    names, bad_names = _select(src, ids, ids_format, unsigned)
    rejects = [(name, err.reason, err.detail) for name, err in bad_names]
    selected = len(names) + len(bad_names)
    if not names and not ids:
        raise NothingUsable(
            f"no images under {src.uri}: expected {IMAGE_DIR}/<name>.jpg and {METADATA_DIR}/<name>.json there. "
            "Point source= at an ABID copy (default s3://aft-vbi-pds)."
        )
    log.info("Reading metadata of %d selected image(s) from %s", selected, src.uri)
    counts: dict[str, int] = {}
    above = 0
    if isinstance(src, LocalStore):  # one listing beats a failed open per absent id (random_val.txt: 53k)
        present = set(src.list(METADATA_DIR + "/"))
        absent = [n for n in names if metadata_key(n) not in present]
        rejects += [(n, "metadata missing", metadata_key(n)) for n in absent]
        names = [n for n in names if metadata_key(n) in present]
    results = _parallel(lambda n: _read_count(src, n), names, workers, "metadata", progress)
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BadItem):
            rejects.append((name, result.reason, result.detail))
        elif max_count is not None and result > max_count:
            above += 1
            if overflow:  # one class for every count above: the model answers "more than max_count"
                counts[name] = max_count + 1
        else:
            counts[name] = result

    previous = _read_splits(previous_splits, unsigned=unsigned) if previous_splits else {}
    previous.update(_read_splits(out, "splits.csv"))
    strata = count_strata(counts, min_stratum) if pooled else None
    plan = assign_splits(counts, fractions, seed, previous, strata)
    existing = {k for k in out.list() if k.split("/", 1)[0] in SPLITS and k.endswith(".jpg")}

    items = [(name, counts[name], plan[name]) for name in sorted(counts)]
    mine = [item for item in items if shard_of(item[0], shards) == rank]  # everything when shards == 1
    if shards > 1:
        log.info("Shard %d of %d: copying %d of %d image(s)", rank, shards, len(mine), len(items))
    if not dry_run and not has_settings and rank == 0:
        out.write("prepare.json", _json({k: settings[k] for k in LOCKED_SETTINGS}))
    report = Report(dataset={}, rejects=rejects, above_max_count=above, dry_run=dry_run)
    report.max_count = max_count if overflow else None
    task = _image_task(src, out, existing, resize, jpeg_quality, dry_run, report.folder)
    outcomes = _parallel(task, mine, workers, "images" + (" (dry run)" if dry_run else ""), progress)
    own_rejects, failed = [], set()
    for (name, _, _), outcome in zip(mine, outcomes, strict=True):
        if isinstance(outcome, BadItem):
            own_rejects.append((name, outcome.reason, outcome.detail))
            failed.add(name)
            continue
        report.written += outcome == "written"
        report.existing += outcome == "existing"
    # Other instances' images count as written by their owners (they report their own rejects).
    report.dataset = {name: (count, split) for name, count, split in items if name not in failed}
    rejects += own_rejects
    rejects.sort()

    wanted = {f"{split}/{report.folder(count)}/{name}.jpg" for name, (count, split) in report.dataset.items()}
    stale = (k for k in existing - wanted if shard_of(k.rsplit("/", 1)[-1][: -len(".jpg")], shards) == rank)
    report.pruned = sorted(stale) if prune else []
    stats = stats_of(report, settings)
    if strata is not None:  # which rare counts were stratified together
        pools: dict[str, list[int]] = {}
        for name, stratum in strata.items():
            if isinstance(stratum, str):
                pools.setdefault(stratum, []).append(counts[name])
        stats["pooled_strata"] = {k: sorted(set(v)) for k, v in sorted(pools.items())}
    if not dry_run:
        for key in report.pruned:
            out.delete(key)
        if rank == 0:
            for key, data in summary_files(report, stats, plot).items():
                write_if_changed(out, key, data)
        elif own_rejects:
            write_if_changed(out, f"rejects-shard-{rank}-of-{shards}.csv",
                             _csv(["name", "reason", "detail"], sorted(own_rejects)))
        if transform_shards:
            placed = [f"test/{report.folder(c)}/{n}.jpg" for n, c, split in mine if split == "test" and n not in failed]
            report.transform_shards = write_shards(out, placed, "test", rank, shards, transform_shard_lines, workers)
    report.seconds = time.perf_counter() - start

    verb = "would write" if dry_run else "wrote"
    log.info(
        "%s %d image(s), %d already there, %d rejected, %d above max_count %s%s, %d stale removed%s, in %.1f s\n%s",
        verb, report.written, report.existing, len(rejects), above, max_count,
        f" (kept as {overflow_folder(max_count)}/)" if overflow else "", len(report.pruned),
        " (dry run)" if dry_run else "", report.seconds, report.table(),
    )  # fmt: skip
    if report.transform_shards is not None:
        done = report.transform_shards
        log.info("Transform shards: %d in %s/%s/ (%d new or changed, %d stale removed)", len(done.keys), out.uri,
                 shard_folder("test"), done.written, len(done.removed))
    if rejects:
        top = ", ".join(f"{reason} {n}" for reason, n in Counter(r for _, r, _ in rejects).most_common(4))
        log.warning("Rejected %d item(s): %s (details in %s/rejects.csv)", len(rejects), top, out.uri)
    if not report.dataset:
        top = ", ".join(f"{reason} ({n})" for reason, n in Counter(r for _, r, _ in rejects).most_common(3))
        raise NothingUsable(
            f"nothing usable: none of the {selected} selected item(s) from {src.uri} gave an image "
            f"with EXPECTED_QUANTITY 0..{'any' if max_count is None else max_count}"
            + (f"; rejects: {top}, listed in {out.uri}/rejects.csv" if rejects else "")
            + ". Check source=, ids= and max_count=."
        )
    return report
