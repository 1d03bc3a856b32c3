"""The retrieval measurements on the synthetic shapes world (README "Retrieval and RAG", notebook 10).

recall_table: a gallery of single-shape scenes (the dual encoders' world), written as PNG files and
indexed through the same path a user's folder takes. Queries: every distinct caption of the
gallery ("a red circle on the left"); relevant: every image with that caption (many scenes share
one). recall@k = the fraction of queries with a relevant image among the first k; "+ ITM" re-ranks
the first `rerank_k` with BLIP's matching head before counting.

qa_task: a gallery of one- and two-shape scenes (LLaVA's world) in which every "colour shape
position" appears in exactly one scene, so "how many shapes are in the scene with the red circle
on the left?" has one answer. Each question is searched by its anchor ("a red circle on the left")
and asked to LLaVA in the words it was trained on ("how many shapes are there?"). Answered with no
retrieval (LLaVA alone), with the retrieved image(s) (approach 1), with the retrieved BLIP
captions as text (approach 2), and with the true scene (the ceiling).
"""
import time
from pathlib import Path

from ..data.shapes import EVAL_START, ShapesWorld, caption_for
from .index import Index
from .search import recall_at_k, search


def write_gallery(folder, scenes):
    """Scenes -> PNG files scene-<index>.png; returns {path: {"caption", "scene"}} for the records."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extra = {}
    for s in scenes:
        path = folder / f"scene-{s.index}.png"
        s.image.save(path)
        extra[str(path)] = {"caption": s.caption, "scene": s.index}
    return extra


def gallery_scenes(count, max_shapes=1, split="train", start=EVAL_START, seed=0):
    return ShapesWorld(image_size=32, max_shapes=max_shapes, seed=seed).scenes(count, split, start)


def build_image_index(root, encoder, folder, extra):
    index = Index.create(root, encoder)
    index.add_images(folder, encoder, on_error="raise", progress=False, extra=extra)
    return index


def recall_table(encoders, folder, extra, scratch, reranker=None, ks=(1, 5, 10), rerank_k=20):
    """{encoder name: {"itc": {k: recall}, "itm": {k: recall} or None, "seconds"}} for text -> image."""
    rows = {}
    for encoder in encoders:
        t0 = time.time()
        index = build_image_index(Path(scratch) / encoder.name, encoder, folder, extra)
        t_index = time.time() - t0
        captions = sorted({r["caption"] for r in index.records})
        relevant = [{i for i, r in enumerate(index.records) if r["caption"] == c} for c in captions]
        t0 = time.time()
        hits = search(index, encoder, text=captions, k=max(max(ks), rerank_k), kind="image")
        t_search = time.time() - t0
        row = {"itc": recall_at_k([[h.row for h in q] for q in hits], relevant, ks), "queries": len(captions),
               "images": len(index), "index_s": t_index, "search_s": t_search, "itm": None}
        if reranker is not None:
            t0 = time.time()
            ranked = [[h.row for h in reranker.rerank(c, q[:rerank_k])] for c, q in zip(captions, hits)]
            row["itm"], row["rerank_s"] = recall_at_k(ranked, relevant, ks), time.time() - t0
        rows[encoder.name] = row
    return rows


def unique_anchor_scenes(count_tried=400, start=EVAL_START, seed=0):
    """One- and two-shape scenes in which every anchor ("colour shape position") is used once."""
    seen, scenes = set(), []
    for s in ShapesWorld(image_size=32, max_shapes=2, seed=seed).scenes(count_tried, "train", start):
        keys = [caption_for([sh]) for sh in s.shapes]
        if len(set(keys)) == len(keys) and not seen & set(keys):
            seen |= set(keys)
            scenes.append(s)
    return scenes


def qa_items(scenes):
    """(anchor query, LLaVA question, answer, scene index, full question) for each scene and anchor shape."""
    items = []
    for s in scenes:
        for anchor in s.shapes:
            query = caption_for([anchor])
            where = query.split(anchor.name, 1)[1].strip()     # "on the left" / "in the middle"
            phrase = f"the scene with the {anchor.name} {where}"
            items.append((query, "how many shapes are there?", s.questions[0][1], s.index,
                          f"how many shapes are in {phrase}?"))
            for other in s.shapes:
                if other is not anchor and [o.color for o in s.shapes].count(other.color) == 1:
                    items.append((query, f"what shape is {other.color}?", other.kind, s.index,
                                  f"what shape is {other.color} in {phrase}?"))
    return items


def qa_task(llava, image_index, caption_index, encoder, scenes, reranker=None, settings=None):
    """{setting: {"correct", "total", "retrieved_right", "seconds"}} over the QA items."""
    from .rag import build_prompt, generate_answer, rag_answer
    by_index = {s.index: s for s in scenes}
    settings = settings or [("no retrieval", dict(approach="none")),
                            ("images, top-1", dict(approach="images", k=1)),
                            ("images, top-3 (3 images in one prompt)", dict(approach="images", k=3)),
                            ("captions, top-1 (text only)", dict(approach="captions", k=1)),
                            ("captions, top-1 + its image", dict(approach="captions", k=1, with_images=True))]
    if reranker is not None:
        settings.insert(2, ("images, top-1 after ITM re-ranking of 10", dict(approach="images", k=1,
                                                                              reranker=reranker)))
    items = qa_items(scenes)
    out = {}
    for name, kw in settings:
        index = caption_index if kw.get("approach") == "captions" else image_index
        t0, correct, right_scene = time.time(), 0, 0
        for query, question, answer, scene, _ in items:
            r = rag_answer(question, llava, index=index, encoder=encoder, query=query, **kw)
            correct += r.answer == answer
            right_scene += bool(r.hits) and r.hits[0].record.get("scene") == scene
        out[name] = {"correct": correct, "total": len(items), "retrieved_right": right_scene,
                     "seconds": time.time() - t0}
    t0, correct = time.time(), 0
    for query, question, answer, scene, _ in items:   # the ceiling: LLaVA given the true scene
        prompt = build_prompt(llava.template, question, 1)
        correct += generate_answer(llava, prompt, [by_index[scene].image]) == answer
    out["the true scene (ceiling)"] = {"correct": correct, "total": len(items), "retrieved_right": len(items),
                                       "seconds": time.time() - t0}
    return out


def caption_gallery(captioner_folder, paths):
    """BLIP captions of the gallery images (approach 2's texts), greedy, in one batch per 256."""
    import torch
    import weights_convert
    from ..data.shapes_tokenizer import BlipShapesTokenizer
    from ..evaluation.captions import generate_captions
    from .index import read_image
    model = weights_convert.load_pretrained(captioner_folder, dtype=torch.float32)
    processor = weights_convert.load_image_processor(captioner_folder)
    tok, captions = BlipShapesTokenizer(), []
    for s in range(0, len(paths), 256):
        pixel_values = processor([read_image(p) for p in paths[s:s + 256]])["pixel_values"]
        captions += generate_captions(model, tok, pixel_values)
    return captions


def measure(scratch, clip_folder, siglip_folder=None, blip_retrieval_folder=None, captioner_folder=None,
            llava_folder=None, gallery=3000, held_out=1000, two_shapes=2000, log=print):
    """Every figure of the README's table: recall (CLIP / SigLIP / BLIP-ITC, +/- ITM) and the QA task."""
    from .encoders import load_encoder
    from .rag import Llava
    from .rerank import ItmReranker
    scratch = Path(scratch)
    folders = {"CLIP": clip_folder, "SigLIP": siglip_folder, "BLIP-ITC": blip_retrieval_folder}
    encoders = [load_encoder(f, name=n) for n, f in folders.items() if f]
    reranker = ItmReranker.load(blip_retrieval_folder) if blip_retrieval_folder else None
    extra = write_gallery(scratch / "gallery", gallery_scenes(gallery))
    log(f"gallery: {len(extra)} single-shape scenes in {scratch / 'gallery'}")
    result = {"recall": recall_table(encoders, scratch / "gallery", extra, scratch / "indexes", reranker)}
    log(result["recall"])
    if held_out:   # colour x shape combinations no model saw in training
        extra = write_gallery(scratch / "held-out", gallery_scenes(held_out, split="test"))
        result["recall_held_out"] = recall_table(encoders, scratch / "held-out", extra, scratch / "indexes-held-out",
                                                 reranker)
        log(result["recall_held_out"])
    if two_shapes:  # captions of two shapes ("a red circle and a blue square"): the encoders never saw one
        extra = write_gallery(scratch / "two-shapes", gallery_scenes(two_shapes, max_shapes=2))
        result["recall_two_shapes"] = recall_table(encoders, scratch / "two-shapes", extra,
                                                   scratch / "indexes-two-shapes", reranker)
        log(result["recall_two_shapes"])
    if llava_folder and captioner_folder:
        scenes = unique_anchor_scenes()
        qa_extra = write_gallery(scratch / "qa", scenes)
        encoder = encoders[0]
        image_index = build_image_index(scratch / "qa-images", encoder, scratch / "qa", qa_extra)
        paths = [r["path"] for r in image_index.records]
        captions = caption_gallery(captioner_folder, paths)
        caption_index = Index.create(scratch / "qa-captions", encoder)
        caption_index.add_texts(captions, encoder, progress=False,
                                extra=[{"path": p, "scene": r["scene"], "true_caption": r["caption"]}
                                       for p, r in zip(paths, image_index.records)])
        result["qa_gallery"] = {"scenes": len(scenes), "items": len(qa_items(scenes)),
                                "captions_exact": sum(c == r["caption"] for c, r in zip(captions, image_index.records))}
        result["qa"] = qa_task(Llava.load(llava_folder), image_index, caption_index, encoder, scenes, reranker)
        log(result["qa"])
    return result


def markdown(result):
    """The README's tables."""
    lines = []
    for key, what in (("recall", "seen combinations"), ("recall_held_out", "held-out combinations"),
                      ("recall_two_shapes", "two-shape scenes")):
        if key in result:
            lines += recall_rows(result[key], what) + [""]
    if "qa" in result:
        lines += ["| QA: answered with | correct | right scene retrieved | seconds |", "|---|---|---|---|"]
        for name, row in result["qa"].items():
            lines.append(f"| {name} | {row['correct']}/{row['total']} ({row['correct'] / row['total']:.0%}) | "
                         f"{row['retrieved_right']}/{row['total']} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def recall_rows(table, what):
    lines = [f"| text -> image, {what} | R@1 | R@5 | R@10 | + ITM R@1 | + ITM R@5 | + ITM R@10 |", "|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        itm = row["itm"] or {}
        lines.append(f"| {name} | " + " | ".join(f"{row['itc'][k]:.2f}" for k in (1, 5, 10)) + " | " +
                     " | ".join(f"{itm[k]:.2f}" if itm else "-" for k in (1, 5, 10)) + " |")
    return lines
