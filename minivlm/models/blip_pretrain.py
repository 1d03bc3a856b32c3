"""BLIP pre-training (Li et al. 2022, Sec. 3.2): ITC + ITM + LM on one batch of image-text pairs.

    image  -> ViT                                             (B, 1 + N, Dv)
    text   -> unimodal encoder ([CLS])          -> ITC with the image's [CLS]
    text   -> image-grounded encoder ([ENC])    -> ITM on the positive pair + 2 hard negatives per pair
    text   -> image-grounded decoder ([DEC])    -> LM (label smoothing from the text config; BLIP: 0.1)

`share_text=True` is the paper's sharing: the encoder and the decoder share all but self-attention.
There is no HF class for this model; its sub-modules carry the names the HF classes use, so
vision_model / text_encoder / text_decoder / the heads can be copied into them after training.
BLIP's momentum encoders and distillation targets are left out: plain hard-target ITC.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..losses.blip import itc_loss, itm_loss, lm_loss, sample_hard_negatives
from ..outputs import ModelOutput
from ..text.bert import BertTextModel, share_encoder_decoder
from ..vision import VisionTransformer
from .blip import BlipConfig


class BlipForPretraining(nn.Module):
    def __init__(self, cfg: BlipConfig, share_text=True, enc_token_id=None, temperature=0.07):
        super().__init__()
        self.config = cfg
        self.enc_token_id = enc_token_id  # [ENC]; None keeps the tokenizer's first token ([CLS])
        self.vision_model = VisionTransformer(cfg.vision)
        self.text_encoder = BertTextModel(cfg.text)
        self.text_decoder = BertTextModel(cfg.text, lm_head=True)
        if share_text:
            share_encoder_decoder(self.text_encoder, self.text_decoder)
        self.vision_proj = nn.Linear(cfg.vision.hidden_size, cfg.image_text_hidden_size)
        self.text_proj = nn.Linear(cfg.text.hidden_size, cfg.image_text_hidden_size)
        self.itm_head = nn.Linear(cfg.text.hidden_size, 2)
        self.temp = nn.Parameter(torch.tensor(float(temperature)))  # learned, clamped as BLIP does

    def forward(self, pixel_values, input_ids, attention_mask=None, generator=None):
        """input_ids (B, L) tokenized captions, [CLS] first; attention_mask (B, L). B >= 2 (negatives)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        B = input_ids.shape[0]
        image = self.vision_model(pixel_values).last_hidden_state  # (B, 1 + N, Dv)

        # ITC: unimodal features, one softmax over the batch in each direction.
        text = self.text_encoder(input_ids, attention_mask).last_hidden_state  # (B, L, D)
        image_feat = F.normalize(self.vision_proj(image[:, 0]), dim=-1)  # (B, E)
        text_feat = F.normalize(self.text_proj(text[:, 0]), dim=-1)
        temp = self.temp.clamp(0.001, 0.5)
        loss_itc = itc_loss(image_feat, text_feat, temp)

        # ITM with hard negatives: for each text an image, for each image a text, drawn by similarity.
        sim_i2t = image_feat @ text_feat.t() / temp  # (B, B)
        neg_image = sample_hard_negatives(sim_i2t.t(), generator)  # (B,) an image per text
        neg_text = sample_hard_negatives(sim_i2t, generator)       # (B,) a text per image
        enc_ids = input_ids.clone()
        if self.enc_token_id is not None:
            enc_ids[:, 0] = self.enc_token_id
        ids = torch.cat([enc_ids, enc_ids, enc_ids[neg_text]])                       # (3B, L)
        mask = torch.cat([attention_mask, attention_mask, attention_mask[neg_text]])
        images = torch.cat([image, image[neg_image], image])                        # (3B, 1 + N, Dv)
        fused = self.text_encoder(ids, mask, encoder_hidden_states=images).last_hidden_state[:, 0]
        itm_logits = self.itm_head(fused)  # (3B, 2)
        itm_labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(itm_logits.device)
        loss_itm = itm_loss(itm_logits, itm_labels)

        # LM: [DEC] replaces [CLS]; padding is not predicted.
        dec_ids = input_ids.clone()
        dec_ids[:, 0] = self.config.text.bos_token_id
        labels = dec_ids.masked_fill(attention_mask == 0, -100)
        logits = self.text_decoder(dec_ids, attention_mask, encoder_hidden_states=image, is_decoder=True).logits
        loss_lm = lm_loss(logits, labels, self.config.text.label_smoothing)

        return ModelOutput(loss=loss_itc + loss_itm + loss_lm, loss_itc=loss_itc, loss_itm=loss_itm,
                           loss_lm=loss_lm, itm_logits=itm_logits, itm_labels=itm_labels,
                           logits_per_image=sim_i2t)
