"""minivlm.retrieval: exact search against brute force, faiss against exact, the index on disk,
the bad inputs, the embeddings and ITM scores against transformers, and the RAG prompt."""
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from minivlm import pretrained
from minivlm.data.shapes import ShapesWorld
from minivlm.retrieval import (Hit, Index, IndexMismatchError, ItmReranker, Llava, build_prompt, generate_answer,
                               load_encoder, rag_answer, recall_at_k, search, topk_exact)
from minivlm.retrieval.encoders import fingerprint
from minivlm.retrieval.index import check_compatible


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


# -- exact search ----------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [7, 64, 100000])
def test_chunked_topk_equals_brute_force(chunk):
    vectors, queries = unit(500, 16, 0), unit(9, 16, 1)
    full = queries @ vectors.t()  # (Q, N): every score at once
    want_s, want_i = full.topk(10, dim=1)
    s, i = topk_exact(queries, vectors, 10, chunk=chunk)
    assert torch.equal(i, want_i)
    torch.testing.assert_close(s, want_s, rtol=0, atol=1e-6)


def test_kind_filter_equals_brute_force_over_the_allowed_rows():
    vectors, queries = unit(300, 8, 2), unit(4, 8, 3)
    allowed = torch.arange(300) % 3 == 0
    rows = allowed.nonzero().squeeze(1)
    want_s, want_i = (queries @ vectors[rows].t()).topk(5, dim=1)
    s, i = topk_exact(queries, vectors, 5, allowed, chunk=50)
    assert torch.equal(i, rows[want_i])
    torch.testing.assert_close(s, want_s, rtol=0, atol=1e-6)
    s, i = topk_exact(queries, vectors[:3], 10)   # k larger than the rows: all of them, sorted
    assert i.shape == (4, 3)


def test_recall_at_k_by_hand():
    ranked = [[5, 1, 2], [0, 9, 3], [7, 8, 4]]
    relevant = [{1}, {0, 3}, {6}]
    assert recall_at_k(ranked, relevant, ks=(1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 2 / 3}


# -- the index on disk, with the shipped CLIP -------------------------------------------------------

@pytest.fixture(scope="module")
def clip():
    return load_encoder(pretrained.path("shapes-clip"))


@pytest.fixture(scope="module")
def scenes():
    return ShapesWorld(image_size=32).scenes(12, start=10**9)


@pytest.fixture
def gallery(tmp_path, scenes):
    folder = tmp_path / "gallery"
    folder.mkdir()
    for s in scenes:
        s.image.save(folder / f"scene-{s.index}.png")
    return folder


def test_index_roundtrip_append_and_search(tmp_path, clip, gallery, scenes):
    index = Index.create(tmp_path / "idx", clip)
    added, skipped = index.add_images(gallery, clip, progress=False)
    assert (added, skipped) == (12, [])
    # The stored vectors are the model's own image features, L2-normalised (computed here directly).
    pixel_values = clip.processor([s.image for s in scenes])["pixel_values"]
    with torch.no_grad():
        want = F.normalize(clip.model.get_image_features(pixel_values), dim=-1)
    torch.testing.assert_close(index.vectors, want, rtol=0, atol=1e-6)
    index.add_texts([s.caption for s in scenes[:5]], clip, progress=False)   # a second shard: appended
    again = Index.open(tmp_path / "idx", clip)
    assert len(again) == 17 and again.header["shards"] == ["vectors-00000.safetensors", "vectors-00001.safetensors"]
    assert torch.equal(again.vectors, index.vectors) and again.records == index.records
    assert [r["kind"] for r in again.records] == ["image"] * 12 + ["text"] * 5
    query = clip.embed_texts([scenes[3].caption])
    s1, r1 = index.search(query, 4, kind="image")
    s2, r2 = again.search(query, 4, kind="image")
    assert torch.equal(r1, r2) and torch.equal(s1, s2)
    assert all(again.records[r]["kind"] == "image" for r in r2[0].tolist())
    # image -> text finds the image's own caption among the five texts (the shipped CLIP knows them)
    hits = search(again, clip, image=scenes[2].image, k=1, kind="text")
    assert hits[0].record["text"] == scenes[2].caption
    # reopening with create(exist_ok=True) appends to the same index
    assert len(Index.create(tmp_path / "idx", clip, exist_ok=True)) == 17


def test_bad_inputs(tmp_path, clip, gallery):
    index = Index.create(tmp_path / "idx", clip)
    with pytest.raises(ValueError, match="holds no .* to search"):
        search(index, clip, text="a red circle", k=3)          # an empty index
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        index.add_images(empty, clip, progress=False)
    (gallery / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        index.add_images(gallery, clip, on_error="raise", progress=False)
    assert len(Index.open(tmp_path / "idx", clip)) == 0           # refused before anything was written
    added, skipped = index.add_images(gallery, clip, on_error="skip", progress=False)
    assert added == 12 and len(skipped) == 1 and skipped[0][0].endswith("broken.png")
    with pytest.raises(ValueError, match="holds no text vectors"):
        index.search(clip.embed_texts(["a red circle"]), 3, kind="text")
    with pytest.raises(ValueError, match="width 3"):
        index.search(torch.ones(1, 3), 3)
    with pytest.raises(FileExistsError):
        Index.create(tmp_path / "idx", clip)
    with pytest.raises(FileNotFoundError, match="no index"):
        Index.open(tmp_path / "nothing", clip)


def test_an_index_refuses_another_model(tmp_path, clip):
    index = Index.create(tmp_path / "idx", clip)
    header = index.header
    renamed = SimpleNamespace(name="other-clip", dim=clip.dim, fingerprint=clip.fingerprint)
    with pytest.raises(IndexMismatchError, match="built with model 'shapes-clip', opened with 'other-clip'"):
        check_compatible(header, renamed, index.root)
    narrower = SimpleNamespace(name=clip.name, dim=32, fingerprint=clip.fingerprint)
    with pytest.raises(IndexMismatchError, match="width 64, the encoder gives 32"):
        check_compatible(header, narrower, index.root)
    # the same architecture and name with other weights: caught by the weights' fingerprint
    other = load_encoder(pretrained.path("shapes-clip"))
    with torch.no_grad():
        other.model.visual_projection.weight.mul_(2)
    other.fingerprint = fingerprint(other.model)
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        Index.open(tmp_path / "idx", other)
    with pytest.raises(IndexMismatchError):
        index.add_texts(["a red circle"], other, progress=False)


def test_faiss_backend_returns_the_exact_results(tmp_path, clip):
    faiss = pytest.importorskip("faiss", reason="faiss-cpu not installed (pip install 'minivlm[faiss]')")
    del faiss
    from minivlm.retrieval.faiss_backend import FaissHNSW
    index = Index.create(tmp_path / "idx", SimpleNamespace(name="random", dim=24, fingerprint="f"))
    index.add(unit(2000, 24, 4), [{"kind": "image" if i % 4 else "text", "n": i} for i in range(2000)])
    queries = unit(20, 24, 5)
    exact = [index.search(queries, 10, kind=k) for k in (None, "image", "text")]
    index.backend = FaissHNSW(index)
    for want, kind in zip(exact, (None, "image", "text")):
        s, r = index.search(queries, 10, kind=kind)
        assert torch.equal(r, want[1]), kind
        torch.testing.assert_close(s, want[0], rtol=0, atol=1e-5)


# -- against transformers ---------------------------------------------------------------------------

def test_clip_embeddings_equal_transformers(clip, scenes):
    transformers = pytest.importorskip("transformers")
    ref = transformers.CLIPModel.from_pretrained(pretrained.path("shapes-clip")).eval()
    captions = [s.caption for s in scenes]
    pixel_values = clip.processor([s.image for s in scenes])["pixel_values"]
    tok = clip.tokenize(captions)
    with torch.no_grad():
        out = ref(pixel_values=pixel_values, **tok)
    assert (clip.embed_images([s.image for s in scenes]) - out.image_embeds).abs().max() <= 1e-5
    assert (clip.embed_texts(captions) - out.text_embeds).abs().max() <= 1e-5


def test_siglip_texts_are_padded_to_the_fixed_length_and_equal_transformers(tmp_path, scenes):
    """SigLIP pools the LAST position: its encoder pads every text to max_length and passes no mask,
    as SigLIP's processor does; the embeddings then equal HF's on those ids."""
    pytest.importorskip("transformers")
    from minivlm.parity.siglip import _siglip
    torch.manual_seed(0)
    ref = _siglip("SiglipModel", text=dict(vocab_size=38, max_position_embeddings=16, pad_token_id=0, bos_token_id=36,
                                           eos_token_id=37), vision=dict(image_size=32, patch_size=4))().eval()
    ref.save_pretrained(tmp_path)
    for name in ("preprocessor_config.json", "shapes_vocab.json"):
        shutil.copy(pretrained.path("shapes-clip") / name, tmp_path / name)
    encoder = load_encoder(tmp_path)
    captions = [s.caption for s in scenes[:4]] + ["a red circle"]
    tok = encoder.tokenize(captions)
    assert list(tok) == ["input_ids"] and tok["input_ids"].shape == (5, 16)
    images = [s.image for s in scenes[:5]]
    with torch.no_grad():
        out = ref(input_ids=tok["input_ids"], pixel_values=encoder.processor(images)["pixel_values"])
    assert (encoder.embed_texts(captions) - out.text_embeds).abs().max() <= 1e-5
    assert (encoder.embed_images(images) - out.image_embeds).abs().max() <= 1e-5


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory):
    """A seeded tiny HF BlipForImageTextRetrieval that reads the shapes tokenizer's ids (42: words + [DEC] [ENC])."""
    pytest.importorskip("transformers")
    from minivlm.parity.blip import _blip
    torch.manual_seed(0)
    ref = _blip("BlipForImageTextRetrieval", text=dict(vocab_size=42, max_position_embeddings=16, bos_token_id=38,
                                                       sep_token_id=39, eos_token_id=39),
                vision=dict(image_size=32, patch_size=8))().eval()
    folder = tmp_path_factory.mktemp("blip-retrieval")
    ref.save_pretrained(folder)
    for name in ("preprocessor_config.json", "shapes_vocab.json"):
        shutil.copy(pretrained.path("shapes-blip") / name, folder / name)
    return folder, ref


def test_blip_itc_embeddings_and_itm_reranking_equal_transformers(blip_folder, scenes):
    folder, ref = blip_folder
    encoder, reranker = load_encoder(folder), ItmReranker.load(folder)
    images, captions = [s.image for s in scenes[:6]], [s.caption for s in scenes[:6]]
    tok = encoder.tokenize(captions)
    pixel_values = encoder.processor(images)["pixel_values"]
    with torch.no_grad():   # HF with use_itm_head=False: the ITC cosine matrix (images, texts)
        cosine = ref(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pixel_values,
                     use_itm_head=False).itm_score
    ours = encoder.embed_images(images) @ encoder.embed_texts(captions).t()
    assert (ours - cosine).abs().max() <= 1e-5
    # ITM: HF's head on the same pairs, [ENC] in place of [CLS] as BLIP's image-grounded encoder reads
    query = captions[0]
    ids = encoder.tokenize([query] * 6)["input_ids"].clone()
    ids[:, 0] = reranker.tokenizer.enc_token_id
    with torch.no_grad():
        p_ref = ref(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_values).itm_score.softmax(-1)[:, 1]
    p = reranker.match_probability([query] * 6, images)
    assert (p - p_ref).abs().max() <= 1e-5
    hits = [Hit(i, 0.0, {"i": i}) for i in range(6)]
    reranked = reranker.rerank(query, hits, image_of=lambda rec: images[rec["i"]])
    assert [h.row for h in reranked] == p_ref.argsort(descending=True).tolist()
    torch.testing.assert_close(torch.tensor([h.score for h in reranked]), p_ref.sort(descending=True).values)


# -- RAG ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llava():
    return Llava.load(pretrained.path("shapes-llava"))


def test_rag_prompt_holds_the_retrieved_images_and_equals_transformers(tmp_path, clip, gallery, scenes, llava):
    index = Index.create(tmp_path / "idx", clip)
    index.add_images(gallery, clip, progress=False)
    result = rag_answer("how many shapes are there?", llava, index=index, encoder=clip, approach="images", k=3,
                        query=scenes[5].caption)
    want = search(index, clip, text=scenes[5].caption, k=3, kind="image")
    assert [h.row for h in result.hits] == [h.row for h in want]
    assert result.prompt == build_prompt(llava.template, "how many shapes are there?", 3)
    assert result.prompt.count("<image>") == 3 and len(result.images) == 3
    # three images in one prompt: the same greedy ids as transformers' LLaVA
    transformers = pytest.importorskip("transformers")
    from minivlm.models.llava_splice import expand_image_tokens, tokenizer_image_token
    ref = transformers.LlavaForConditionalGeneration.from_pretrained(pretrained.path("shapes-llava")).eval()
    cfg = llava.model.config
    ids = expand_image_tokens(tokenizer_image_token(result.prompt, llava.tokenizer), cfg.features_per_image,
                              cfg.image_token_index)[None]
    pixel_values = llava.processor(result.images)["pixel_values"]
    with torch.no_grad():
        ours = llava.model.generate(input_ids=ids, pixel_values=pixel_values, max_new_tokens=6)
        theirs = ref.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_values,
                              max_new_tokens=6, do_sample=False)
    assert torch.equal(ours, theirs)
    # approach 2: captions as text context, and the baseline without retrieval
    index.add_texts([s.caption for s in scenes], clip, progress=False,
                    extra=[{"path": str(gallery / f"scene-{s.index}.png")} for s in scenes])
    r2 = rag_answer("how many shapes are there?", llava, index=index, encoder=clip, approach="captions", k=2,
                    query=scenes[5].caption)
    assert r2.images == [] and f"context: {scenes[5].caption}" in r2.prompt
    assert r2.answer == generate_answer(llava, r2.prompt, [])
    none = rag_answer("how many shapes are there?", llava, approach="none")
    assert none.hits == [] and "<image>" not in none.prompt
    with pytest.raises(ValueError, match="needs an index"):
        rag_answer("how many shapes are there?", llava, approach="images")


def test_cli_index_and_search(tmp_path, gallery, scenes, capsys):
    from minivlm.cli import main
    (gallery / "broken.png").write_bytes(b"")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(s.caption for s in scenes[:4]) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["index", str(gallery), "--texts", str(texts), "--out", str(tmp_path / "idx")])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "12 images added, 1 skipped" in out and "broken.png" in out and "4 texts added" in out
    with pytest.raises(SystemExit) as e:
        main(["search", scenes[0].caption, "--index", str(tmp_path / "idx"), "-k", "2"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.count("cosine") == 2 and ".png" in out
    with pytest.raises(SystemExit) as e:
        main(["search", "--image", str(gallery / f"scene-{scenes[1].index}.png"), "--index", str(tmp_path / "idx"),
              "-k", "1"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and scenes[1].caption in out
    with pytest.raises(SystemExit) as e:
        main(["search", "a red circle", "--index", str(tmp_path / "missing")])
    assert e.value.code == 2 and "no index" in capsys.readouterr().err
