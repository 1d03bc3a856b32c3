"""Processor: a prompt's text and its images (and videos) -> the model's inputs, as transformers'
AutoProcessor returns them (same call, same keys, same tensors).

    images -> image processor -> pixel_values [, image_sizes, image_grid_thw, batch_num_images]
    text   -> each <image> placeholder becomes as many image tokens as the model makes features
           -> tokenizer (padding, truncation) -> input_ids, attention_mask [, mm_token_type_ids]

How many tokens an image becomes is counted by the function the model counts its features with,
so a processor and its model cannot disagree (one count, two callers):

    LLaVA        anyres.tokens_per_image          patches (+ [CLS]) (- the first with 'default')
    LLaVA-NeXT   anyres.num_image_tokens          base tile + unpadded grid + a newline per row
    OneVision    llava_onevision.onevision_image_tokens / video_tokens
    Qwen2-VL     qwen2_vl.merged_tokens           t * h * w / merge^2 per image or video
    BLIP-2, InstructBLIP   num_query_tokens image tokens in front of every prompt (Q-Former queries)
    CLIP, SigLIP, BLIP     no placeholder: text and images go side by side

Each family is a small subclass saying how it counts (image_counts / video_counts); the walk from
text to ids is written once, here. Chat templates are rendered by chat_template.py.
"""
import re

import numpy as np
import torch

from minivlm.outputs import ModelOutput

from .anyres import AnyresGeometry, num_image_tokens, tokens_per_image
from .llava_onevision import max_tiles_of, onevision_image_tokens, video_tokens
from .qwen2_vl import merged_tokens


def flat_images(images):
    """HF's make_flat_list_of_images: one image, a list, or a list of lists (per prompt) -> a list."""
    if not isinstance(images, (list, tuple)):
        return [images]
    return [im for x in images for im in (x if isinstance(x, (list, tuple)) else [x])]


def batched_videos(videos):
    """HF's make_batched_videos: one video ((F, H, W, 3) array or a list of frames) or a list of them
    -> a list of (F, H, W, 3) uint8 arrays."""
    def is_video(v):
        return isinstance(v, np.ndarray) and v.ndim == 4 or torch.is_tensor(v) and v.dim() == 4
    if is_video(videos) or isinstance(videos, (list, tuple)) and videos and not any(
            is_video(v) or isinstance(v, (list, tuple)) for v in videos):
        videos = [videos]
    out = []
    for video in videos:
        frames = video.numpy() if torch.is_tensor(video) else video
        frames = np.stack([np.asarray(f) for f in frames]) if isinstance(frames, (list, tuple)) else np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"a video must be (frames, H, W, 3) uint8 pixels or a list of RGB frames; "
                             f"got {frames.dtype} {frames.shape}")
        out.append(frames)
    return out


def to_tensors(out, return_tensors):
    """Lists of ids -> (B, L) long tensors ("pt"), numpy ("np"), or left as lists (None)."""
    if return_tensors not in (None, "pt", "np"):
        raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
    converted = ModelOutput()
    for key, value in out.items():
        if isinstance(value, list) and return_tensors is not None and key != "text_replacement_offsets":
            rows = value if value and isinstance(value[0], (list, tuple)) else [value]
            if len({len(r) for r in rows}) > 1:
                raise ValueError(f"{key}: the prompts have different lengths {sorted({len(r) for r in rows})}; "
                                 f"pass padding=True to make a tensor")
            value = torch.tensor(rows) if return_tensors == "pt" else np.array(rows)
        elif return_tensors == "np" and torch.is_tensor(value):
            value = value.numpy()
        converted[key] = value
    return converted


class Processor:
    """CLIP, SigLIP and BLIP: the tokenizer's output and the image processor's, side by side."""
    image_token = None                      # the placeholder a prompt writes once per image
    video_token = None
    return_mm_token_type_ids = False        # Qwen2-VL returns them by default

    def __init__(self, tokenizer, image_processor=None, chat_template=None, video_processor=None,
                 image_token=None, video_token=None, **unused):
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.video_processor = video_processor or image_processor
        self.chat_template = chat_template
        self.image_token = image_token or self.image_token
        self.video_token = video_token or self.video_token
        self.image_token_id = self.token_id(self.image_token)
        self.video_token_id = self.token_id(self.video_token)

    def token_id(self, token):
        if token is None:
            return None
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"the tokenizer has no {token!r} token, which {type(self).__name__} writes for each "
                             f"image/video; its folder should list it in added_tokens")
        return token_id

    # --- what a family says -----------------------------------------------------------------
    def image_counts(self, image_inputs):
        """Tokens each image becomes, in order (families with a placeholder override this)."""
        raise NotImplementedError

    def video_counts(self, video_inputs):
        raise NotImplementedError

    def process_images(self, images, return_tensors):
        return self.image_processor(flat_images(images), return_tensors=return_tensors)

    def process_videos(self, videos, return_tensors):
        raise ValueError(f"{type(self).__name__} takes no videos")

    # --- the walk -------------------------------------------------------------------------
    def __call__(self, images=None, text=None, videos=None, *, padding=False, padding_side=None, truncation=None,
                 max_length=None, return_tensors=None, add_special_tokens=True, return_mm_token_type_ids=None,
                 return_text_replacement_offsets=False):
        if images is None and text is None and videos is None:
            raise ValueError(f"{type(self).__name__} needs text, images or videos; got none")
        texts = self.as_texts(text)
        tensors = "pt" if return_tensors == "pt" else "np"
        image_inputs = self.process_images(images, tensors) if images is not None else {}
        video_inputs = self.process_videos(videos, tensors) if videos is not None else {}
        out = {}
        if texts is not None:
            text_kwargs = dict(padding=padding, padding_side=padding_side, truncation=truncation,
                               max_length=max_length, add_special_tokens=add_special_tokens)
            out.update(self.encode_text(texts, images, image_inputs, video_inputs, text_kwargs))
            replacements = out.pop("text_replacement_offsets", [[] for _ in texts])
            if return_text_replacement_offsets:  # where each placeholder went (the assistant mask needs it)
                out["text_replacement_offsets"] = replacements
            if self.return_mm_token_type_ids if return_mm_token_type_ids is None else return_mm_token_type_ids:
                kinds = {self.image_token_id: 1, self.video_token_id: 2}
                out["mm_token_type_ids"] = [[kinds.get(i, 0) for i in row] for row in out["input_ids"]]
        return to_tensors({**out, **image_inputs, **video_inputs}, return_tensors)

    def as_texts(self, text):
        if text is None:
            return None
        if isinstance(text, str):
            return [text] if self.image_token else text  # HF keeps a lone string lone without placeholders
        if not isinstance(text, (list, tuple)) or not all(isinstance(t, str) for t in text):
            raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
        return list(text)

    def encode_text(self, texts, images, image_inputs, video_inputs, text_kwargs):
        """Placeholders expanded, then tokenised; refuses a truncation that cut into image tokens."""
        if self.image_token is None:
            return dict(self.tokenizer(texts, **text_kwargs))
        images_given = len(flat_images(images)) if images is not None else 0
        self.check_placeholders(texts, self.image_token, images_given, "image")
        image_counts = self.image_counts(image_inputs) if image_inputs else []
        video_counts = []
        if self.video_token is not None:
            videos_given = len(video_counts := self.video_counts(video_inputs)) if video_inputs else 0
            self.check_placeholders(texts, self.video_token, videos_given, "video")
        expanded, replacements = self.expand(texts, image_counts, video_counts)
        encoded = dict(self.tokenizer(expanded, **text_kwargs))
        self.check_not_cut(expanded, encoded["input_ids"], text_kwargs["max_length"])
        return {**encoded, "text_replacement_offsets": replacements}

    @staticmethod
    def check_placeholders(texts, token, given, what):
        per_prompt = [t.count(token) for t in texts]
        if sum(per_prompt) != given:
            raise ValueError(f"the prompts hold {sum(per_prompt)} {token} placeholder(s) {per_prompt} but {given} "
                             f"{what}(s) were given: write one {token} per {what}, where it goes in the prompt")

    def expand(self, texts, image_counts, video_counts):
        """Each placeholder -> count copies of it, the k-th image's count at the k-th <image>.
        Also, per text, where each placeholder was and went (HF's text_replacement_offsets:
        {"type", "span", "new_span", "text", "replacement"})."""
        runs = {self.image_token: iter(image_counts), self.video_token: iter(video_counts)}
        kinds = {self.image_token: "image", self.video_token: "video"}
        pattern = re.compile("|".join(re.escape(t) for t in runs if t is not None))
        expanded, offsets = [], []
        for text in texts:
            pieces, moved, last, gained = [], [], 0, 0
            for m in pattern.finditer(text):
                replacement = m.group() * next(runs[m.group()])
                start = m.start() + gained
                moved.append({"type": kinds[m.group()], "span": m.span(), "new_span": (start, start + len(replacement)),
                              "text": m.group(), "replacement": replacement})
                pieces += [text[last:m.start()], replacement]
                gained += len(replacement) - len(m.group())
                last = m.end()
            expanded.append("".join(pieces) + text[last:])
            offsets.append(moved)
        return expanded, offsets

    def check_not_cut(self, expanded, input_ids, max_length):
        for token, token_id in ((self.image_token, self.image_token_id), (self.video_token, self.video_token_id)):
            if token is None:
                continue
            for row, (text, ids) in enumerate(zip(expanded, input_ids)):
                need, kept = text.count(token), ids.count(token_id)
                if need != kept:
                    raise ValueError(f"truncation to max_length={max_length} cuts prompt {row}'s {token} tokens: its "
                                     f"images need {need}, {kept} are left; raise max_length or pass truncation=False")

    # --- decoding -------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens=False):
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens=False):
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True):
        """generate's ids (B, L) -> B strings ((L,) -> one string), special tokens skipped by default."""
        ids = generated_outputs.tolist() if hasattr(generated_outputs, "tolist") else generated_outputs
        if ids and isinstance(ids[0], list):
            return self.batch_decode(ids, skip_special_tokens)
        return self.decode(ids, skip_special_tokens)

    # --- chat templates -------------------------------------------------------------------
    def apply_chat_template(self, conversation, chat_template=None, add_generation_prompt=False,
                            continue_final_message=False, tokenize=False, return_dict=False, return_tensors=None,
                            return_assistant_tokens_mask=False, processor_kwargs=None, **template_kwargs):
        """The folder's chat template rendered over the conversation (chat_template.py: jinja2,
        sandboxed, HF's extensions); tokenize=True runs the prompt and the images found in the
        messages through this processor. See chat_turns.py."""
        from .chat_turns import apply_chat_template
        return apply_chat_template(self, conversation, chat_template, add_generation_prompt, continue_final_message,
                                   tokenize, return_dict, return_tensors, return_assistant_tokens_mask,
                                   processor_kwargs or {}, template_kwargs)


class LlavaProcessor(Processor):
    """LLaVA-1.5: every image the same (H/p) * (W/p) patches (+ [CLS]) (- the first with 'default')."""
    image_token = "<image>"

    def __init__(self, tokenizer, image_processor, patch_size=None, vision_feature_select_strategy="default",
                 num_additional_image_tokens=0, **kwargs):
        super().__init__(tokenizer, image_processor, **kwargs)
        if patch_size is None:
            raise ValueError(f"{type(self).__name__} needs patch_size (the vision tower's), e.g. in processor_config.json")
        self.patch_size, self.num_additional_image_tokens = patch_size, num_additional_image_tokens
        self.vision_feature_select_strategy = vision_feature_select_strategy

    def image_counts(self, image_inputs):
        pixel_values = image_inputs["pixel_values"]  # (I, 3, H, W)
        h, w = pixel_values.shape[-2:]
        n = tokens_per_image((h // self.patch_size) * (w // self.patch_size), self.num_additional_image_tokens,
                             self.vision_feature_select_strategy)
        return [n] * len(pixel_values)


class LlavaNextProcessor(LlavaProcessor):
    """LLaVA-NeXT: each image's count depends on its size (anyres tiles, unpadded, newline per row)."""
    def geometry(self, tile):
        return AnyresGeometry(self.image_processor.image_grid_pinpoints, tile, self.patch_size,
                              self.vision_feature_select_strategy, class_token=bool(self.num_additional_image_tokens))

    def image_counts(self, image_inputs):
        geometry = self.geometry(int(image_inputs["pixel_values"].shape[-1]))
        return [num_image_tokens(size, geometry) for size in image_inputs["image_sizes"].tolist()]


class LlavaOnevisionProcessor(Processor):
    """OneVision: NeXT's count for an image alone in its prompt, base tile + newline for one of several
    (batch_num_images), and per video ceil(n/2)^2 pooled tokens a frame + one newline."""
    image_token, video_token = "<image>", "<video>"

    def __init__(self, tokenizer, image_processor, num_image_tokens=None, vision_feature_select_strategy="full",
                 vision_aspect_ratio="anyres_max_9", **kwargs):
        super().__init__(tokenizer, image_processor, **kwargs)
        if num_image_tokens is None:
            raise ValueError("LlavaOnevisionProcessor needs num_image_tokens (a tile's features, e.g. 729 = 27 x 27)")
        self.patches_per_side = int(round(num_image_tokens ** 0.5))
        if self.patches_per_side ** 2 != num_image_tokens:
            raise ValueError(f"num_image_tokens must be a square number of patches, got {num_image_tokens}")
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.max_tiles = max_tiles_of(vision_aspect_ratio)

    def process_images(self, images, return_tensors):
        return self.image_processor(images, return_tensors=return_tensors)  # nested: images per prompt

    def geometry(self, tile):
        n = self.patches_per_side
        patch = tile // n
        if patch < 1 or tile // patch != n:
            raise ValueError(f"num_image_tokens {n * n} ({n} x {n} patches) does not fit tiles of {tile} px")
        return AnyresGeometry(self.image_processor.image_grid_pinpoints, tile, patch,
                              self.vision_feature_select_strategy, class_token=False)

    def image_counts(self, image_inputs):
        geometry = self.geometry(int(image_inputs["pixel_values"].shape[-1]))
        tiled = [int(n) == 1 for n in image_inputs["batch_num_images"].tolist() for _ in range(int(n))]
        return [onevision_image_tokens(size, geometry, self.max_tiles, t)
                for size, t in zip(image_inputs["image_sizes"].tolist(), tiled)]

    def process_videos(self, videos, return_tensors):
        """Every frame resized and normalised as one image -> pixel_values_videos (V, F, 3, H, W)."""
        clips = batched_videos(videos)
        if len({v.shape for v in clips}) > 1:
            raise ValueError(f"videos of different shapes {sorted({v.shape for v in clips})} cannot be stacked")
        frames = np.stack([np.stack([self.video_processor.preprocess_one(f) for f in v]) for v in clips])
        return {"pixel_values_videos": torch.from_numpy(frames) if return_tensors == "pt" else frames}

    def video_counts(self, video_inputs):
        return [video_tokens(v.shape[0], self.patches_per_side) for v in video_inputs["pixel_values_videos"]]


class Qwen2VLProcessor(Processor):
    """Qwen2-VL / Qwen2.5-VL: t*h*w / merge^2 <|image_pad|> (or <|video_pad|>) tokens per image (video);
    mm_token_type_ids by default (the M-RoPE positions read them)."""
    image_token, video_token = "<|image_pad|>", "<|video_pad|>"
    return_mm_token_type_ids = True

    def __init__(self, tokenizer, image_processor, seconds_per_grid=False, **kwargs):
        super().__init__(tokenizer, image_processor, **kwargs)
        self.seconds_per_grid = seconds_per_grid   # Qwen2.5-VL: second_per_grid_ts for each video

    def image_counts(self, image_inputs):
        return merged_tokens(image_inputs["image_grid_thw"], self.image_processor.merge_size)

    def process_videos(self, videos, return_tensors):
        out = self.video_processor.video(batched_videos(videos), return_tensors=return_tensors)
        if self.seconds_per_grid:
            # HF: temporal_patch_size / the video's fps, which is 24 for frames given without metadata.
            seconds = [self.video_processor.temporal_patch_size / 24] * len(out["video_grid_thw"])
            out["second_per_grid_ts"] = torch.tensor(seconds) if return_tensors == "pt" else np.array(seconds)
        return out

    def video_counts(self, video_inputs):
        return merged_tokens(video_inputs["video_grid_thw"], self.video_processor.merge_size)


class Blip2Processor(Processor):
    """BLIP-2: num_query_tokens <image> tokens put in front of every prompt (after padding, as HF
    does), where the Q-Former's query outputs go; max_length counts them."""
    def __init__(self, tokenizer, image_processor, num_query_tokens=None, image_token="<image>", **kwargs):
        super().__init__(tokenizer, image_processor, **kwargs)
        self.num_query_tokens = num_query_tokens
        self.query_token = image_token
        self.query_token_id = tokenizer.token_to_id(image_token)
        if self.query_token_id is None:  # HF adds it to the tokenizer when the folder lacks it
            self.query_token_id = tokenizer.add_special_token(image_token)

    def as_texts(self, text):
        return [text] if isinstance(text, str) else super().as_texts(text)

    def encode_text(self, texts, images, image_inputs, video_inputs, text_kwargs):
        text_kwargs = dict(text_kwargs)
        if text_kwargs["max_length"] is not None and self.num_query_tokens:
            text_kwargs["max_length"] -= self.num_query_tokens
        out = dict(self.tokenizer(texts, **text_kwargs))
        if images is not None and self.num_query_tokens:
            q = self.num_query_tokens
            out = {"input_ids": [[self.query_token_id] * q + row for row in out["input_ids"]],
                   "attention_mask": [[1] * q + row for row in out["attention_mask"]]}
        return out


class InstructBlipProcessor(Blip2Processor):
    """InstructBLIP: BLIP-2's, plus the instruction tokenised again for the Q-Former (its own BERT
    tokenizer, the full max_length): qformer_input_ids, qformer_attention_mask."""
    def __init__(self, tokenizer, image_processor, qformer_tokenizer=None, **kwargs):
        super().__init__(tokenizer, image_processor, **kwargs)
        if qformer_tokenizer is None:
            raise ValueError("InstructBlipProcessor needs the Q-Former's tokenizer (the folder's qformer_tokenizer/)")
        self.qformer_tokenizer = qformer_tokenizer

    def encode_text(self, texts, images, image_inputs, video_inputs, text_kwargs):
        qformer = self.qformer_tokenizer(texts, **text_kwargs)
        out = super().encode_text(texts, images, image_inputs, video_inputs, text_kwargs)
        return {"qformer_input_ids": qformer["input_ids"], "qformer_attention_mask": qformer["attention_mask"], **out}


# processor_class (as processor_config.json / preprocessor_config.json name it) -> class, extra kwargs
FAMILIES = {
    "CLIPProcessor": (Processor, {}), "SiglipProcessor": (Processor, {}), "BlipProcessor": (Processor, {}),
    "LlavaProcessor": (LlavaProcessor, {}), "LlavaNextProcessor": (LlavaNextProcessor, {}),
    "LlavaOnevisionProcessor": (LlavaOnevisionProcessor, {}),
    "Qwen2VLProcessor": (Qwen2VLProcessor, {}), "Qwen2_5_VLProcessor": (Qwen2VLProcessor, {"seconds_per_grid": True}),
    "Blip2Processor": (Blip2Processor, {}), "InstructBlipProcessor": (InstructBlipProcessor, {}),
}
