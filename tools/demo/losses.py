"""The demo model's three training-only losses (their heads are thrown away; the exported model is
a plain PaliGemma 2), beside the language-model loss on the answer:

- vision targets (`AuxHeads`): linear probes on the SigLIP output predict, per patch, what covers
  it, its colour, which of its sub-cells a shape covers, the covering shape's box and, on text,
  the character under the patch;
- decoder targets (`patch_word_targets`, `decoder_aux_loss`): through the tied embedding, each
  image position's output names its shape's kind and colour pieces and box <loc> tokens, and on
  text the OCR answer's piece under it;
- grounding targets (`grounding_loss`): each prompt word naming a shape in the scene asks for that
  shape's four box <loc> tokens.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenes  # noqa: E402
from data import N_CHAR, N_COLOR, N_KIND, SUB  # noqa: E402


class AuxHeads(torch.nn.Module):
    """Training-only linear probes on the vision tower's patch outputs (not exported)."""

    def __init__(self, width, read_weight=0.0):
        super().__init__()
        self.read_weight = read_weight
        self.kind = torch.nn.Linear(width, N_KIND)
        self.color = torch.nn.Linear(width, N_COLOR)
        self.occ = torch.nn.Linear(width, SUB * SUB)
        self.box = torch.nn.Linear(width, 4)
        if read_weight > 0:
            self.char = torch.nn.Linear(width, N_CHAR)

    def loss(self, feats, aux):
        f = feats.float()  # (B, GRID*GRID, width)
        l_kind = F.cross_entropy(self.kind(f).flatten(0, 1), aux["aux_kind"].flatten())
        l_color = F.cross_entropy(self.color(f).flatten(0, 1), aux["aux_color"].flatten())
        l_occ = F.binary_cross_entropy_with_logits(self.occ(f), aux["aux_occ"])
        has = (aux["aux_color"] > 0).float()[..., None]
        l_box = ((torch.sigmoid(self.box(f)) - aux["aux_box"]).abs() * has).sum() / has.sum().clamp(min=1) / 4
        total = l_kind + l_color + l_occ + 5 * l_box
        if self.read_weight > 0:  # the character under each text patch (target 0: not text)
            text = aux["aux_char"] > 0
            if text.any():
                total = total + self.read_weight * F.cross_entropy(self.char(f[text]), aux["aux_char"][text])
        return total


def patch_word_targets(tok, aux, loc0):
    """Per image position, the tokens the decoder's output there should predict (training only):
    the covering shape's kind and colour words (the `▁word` pieces used in prompts and captions)
    and its four box `<loc>` tokens; on text, the OCR answer's piece under the patch (with the
    reading targets). Shape (B, GRID*GRID, 6 or 7); -1 where nothing applies."""
    kind_ids = torch.tensor([-1] + [tok.convert_tokens_to_ids("▁" + k) for k in scenes.SHAPES] + [-1])
    color_ids = torch.tensor([-1] + [tok.convert_tokens_to_ids("▁" + c) for c in scenes.COLORS])
    box = aux["aux_box"].float()  # x0, y0, x1, y1 fractions
    locs = loc0 + (box[..., [1, 0, 3, 2]] * 1023).round().long().clamp(0, 1023)
    t = torch.cat([kind_ids[aux["aux_kind"]][..., None], color_ids[aux["aux_color"]][..., None], locs], -1)
    t[aux["aux_color"] == 0] = -1
    return torch.cat([t, aux["aux_piece"][..., None]], -1) if "aux_piece" in aux else t


def decoder_aux_loss(logits, targets):
    """Mean negative log-likelihood of each patch's targets at the image positions' outputs."""
    lp = torch.log_softmax(logits[:, :targets.shape[1]].float(), -1)
    valid = targets >= 0
    got = lp.gather(-1, targets.clamp(min=0))
    return -(got * valid).sum() / valid.sum().clamp(min=1)


def grounding_loss(logits, aux):
    """Mean negative log-likelihood of the named shape's four box <loc> tokens at the output of
    each prompt token that names a shape in the scene (`detect triangle`, `where is the star?`):
    binds the query word to its shape's patches in the prefix, where every position sees all."""
    if "ground_pos" not in aux:
        return torch.zeros(())
    rows = logits[aux["ground_row"], aux["ground_pos"]].float()  # (n, vocab)
    lp = torch.log_softmax(rows, -1)
    return -lp.gather(-1, aux["ground_locs"]).mean()
