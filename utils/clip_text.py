"""CLIP's text tower with less work and the same features: the context cut to the batch's longest
prompt, and the tokens every prompt starts with run once. Both are exact under the causal mask."""
import torch


def trimmed_text_features(model, dtype, tokens):
    """CLIP's encode_text with the context cut to the longest prompt of the batch.

    Exact: the causal mask means no position attends past itself, and the feature is read at
    the end-of-text token, which lies inside the kept prefix.
    """
    length = int((tokens != 0).sum(1).max())
    tokens = tokens[:, :length]
    x = model.token_embedding(tokens).type(dtype) + model.positional_embedding[:length].type(dtype)
    x = x.permute(1, 0, 2)  # sequence first, as CLIP's transformer expects
    mask = torch.full((length, length), float("-inf"), device=x.device).triu_(1).type(dtype)
    for block in model.transformer.resblocks:
        x = x + block.attn(block.ln_1(x), block.ln_1(x), block.ln_1(x), need_weights=False, attn_mask=mask)[0]
        x = x + block.mlp(block.ln_2(x))
    x = model.ln_final(x.permute(1, 0, 2)).type(dtype)
    eot = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
    return x[torch.arange(x.shape[0]), eot] @ model.text_projection


def shared_prefix_text_features(model, dtype, tokens):
    """trimmed_text_features, with the tokens that every prompt of the batch starts with (the
    template's `<start> a photo of a`) run once instead of once per prompt.

    Exact for the same reason: under the causal mask a position's state depends only on the
    tokens up to it, so a shared prefix has the same states in every prompt. The prompts' own
    tokens attend to the prefix's keys and values and, causally, to each other's.
    """
    length = int((tokens != 0).sum(1).max())
    tokens = tokens[:, :length]
    eot = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
    same = (tokens == tokens[:1]).all(0).int().cumprod(0)
    shared = min(int(same.sum()), int(eot.min()))  # the end-of-text token stays with each prompt
    if shared < 2 or len(tokens) < 2:
        return trimmed_text_features(model, dtype, tokens)

    def embed(part, positions):
        x = model.token_embedding(part).type(dtype) + model.positional_embedding[positions].type(dtype)
        return x.permute(1, 0, 2)  # sequence first, as CLIP's transformer expects

    def causal(rows, past):
        mask = torch.zeros(rows, past + rows, device=tokens.device)
        mask[:, past:] = torch.full((rows, rows), float("-inf"), device=tokens.device).triu_(1)
        return mask.type(dtype)

    prefix, own = embed(tokens[:1, :shared], slice(0, shared)), embed(tokens[:, shared:], slice(shared, length))
    prefix_mask, own_mask = causal(shared, 0), causal(length - shared, shared)
    for block in model.transformer.resblocks:
        p, o = block.ln_1(prefix), block.ln_1(own)
        context = torch.cat([p.expand(-1, len(tokens), -1), o])
        own = own + block.attn(o, context, context, need_weights=False, attn_mask=own_mask)[0]
        own = own + block.mlp(block.ln_2(own))
        prefix = prefix + block.attn(p, p, p, need_weights=False, attn_mask=prefix_mask)[0]
        prefix = prefix + block.mlp(block.ln_2(prefix))
    x = model.ln_final(own.permute(1, 0, 2)).type(dtype)
    return x[torch.arange(x.shape[0]), eot - shared] @ model.text_projection
