"""The LLaVA training step's loss: the model's own next-token loss on a LlavaCollator batch (labels
masked to the replies). Shared by the shapes recipe (llava.py) and training on LLaVA-format JSON
(llava_json.py), so neither imports the other for it."""


def llava_loss(model, batch):
    return model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                 attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
