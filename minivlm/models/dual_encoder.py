"""What CLIP and SigLIP share: two towers, a joint embedding space, scaled cosine similarities.

    image -> vision tower -> pooled (B_i, Dv) -> [visual_projection] -> image_embeds (B_i, E), L2-normalised
    text  -> text tower   -> pooled (B_t, Dt) -> [text_projection]   -> text_embeds  (B_t, E), L2-normalised
    logits_per_text  = exp(logit_scale) * text_embeds @ image_embeds^T  [+ logit_bias]     (B_t, B_i)
    logits_per_image = logits_per_text^T                                                   (B_i, B_t)
    loss = loss_fn(logits_per_text)     (losses.py: clip_loss | siglip_loss)

CLIP and SigLIP subclass this and differ only in what they set: projections or not, a bias or
not, which loss. The temperature is learned in log space so that it stays positive.
"""
from torch import nn

from ..outputs import ModelOutput
from ..text.text_transformer import TextTransformer
from ..vision.vit import VisionTransformer


class DualEncoder(nn.Module):
    loss_fn = None             # a function of logits_per_text, set by the subclass

    def __init__(self, text_config, vision_config):
        super().__init__()
        self.text_model = TextTransformer(text_config)
        self.vision_model = VisionTransformer(vision_config)
        self.visual_projection = None   # nn.Linear in CLIP
        self.text_projection = None
        self.logit_bias = None          # nn.Parameter in SigLIP

    def init_embeddings(self, std=0.02):
        """Small random tables for training from scratch (the towers start position tables at zero);
        loading a checkpoint overwrites all of this."""
        for table in (self.text_model.token_embed.weight, self.text_model.pos_embed.weight,
                      self.vision_model.pos_embed, self.vision_model.cls_token):
            if table is not None:
                nn.init.normal_(table, std=std)

    # -- features: the embeds before normalisation -----------------------------------------------

    def get_image_features(self, pixel_values, interpolate_pos_encoding=False):
        """pixel_values (B, C, H, W) -> (B, E) image features, NOT normalised.

        minivlm returns the tensor itself. transformers 5 returns a BaseModelOutputWithPooling whose
        `pooler_output` holds this same tensor (older transformers returned the tensor, like us).
        """
        pooled = self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).pooler_output
        return pooled if self.visual_projection is None else self.visual_projection(pooled)

    def get_text_features(self, input_ids, attention_mask=None, position_ids=None):
        """input_ids (B, L) -> (B, E) text features, NOT normalised (same contract as get_image_features)."""
        pooled = self.text_model(input_ids, attention_mask=attention_mask, position_ids=position_ids).pooler_output
        return pooled if self.text_projection is None else self.text_projection(pooled)

    # -- similarities -----------------------------------------------------------------------------

    def similarity(self, text_embeds, image_embeds):
        """Normalised embeds (B_t, E), (B_i, E) -> logits_per_text (B_t, B_i)."""
        logits = text_embeds @ image_embeds.t() * self.logit_scale.exp()
        return logits if self.logit_bias is None else logits + self.logit_bias

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None,
                return_loss=None, interpolate_pos_encoding=False):
        if input_ids is None or pixel_values is None:
            raise ValueError(f"{type(self).__name__} needs both input_ids and pixel_values; for one side call "
                             f"get_text_features / get_image_features")
        image_embeds = self.get_image_features(pixel_values, interpolate_pos_encoding)  # (B_i, E)
        text_embeds = self.get_text_features(input_ids, attention_mask, position_ids)   # (B_t, E)
        image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
        logits_per_text = self.similarity(text_embeds, image_embeds)  # (B_t, B_i)
        out = ModelOutput(logits_per_image=logits_per_text.t(), logits_per_text=logits_per_text,
                          text_embeds=text_embeds, image_embeds=image_embeds)
        if return_loss:
            out.loss = self.loss_fn(logits_per_text)
        return out
