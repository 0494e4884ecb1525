"""Small VQ-VAE for segmentation masks, decoder identical in shape to big_vision's vae-oid.

Codebook: 128 codes x D. A 64x64 mask is encoded into a 4x4 grid of codes. Decoder:
Conv1x1(D->128)+ReLU, 2 residual blocks (3x3, ReLU, 3x3, ReLU, 1x1, + skip),
4 x [ConvTranspose(4, stride 2, pad 1), ReLU] 128->128->64->32->16, Conv1x1(16->1).
Output in about [-1, 1]; threshold at 0.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CODES = 128


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(c, c, 1))

    def forward(self, x):
        return x + self.net(x)


def make_decoder(D):
    return nn.Sequential(
        nn.Conv2d(D, 128, 1), nn.ReLU(),                       # 0, 1
        ResBlock(128), ResBlock(128),                          # 2, 3
        nn.ConvTranspose2d(128, 128, 4, 2, 1), nn.ReLU(),      # 4, 5
        nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(),       # 6, 7
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),        # 8, 9
        nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(),        # 10, 11
        nn.Conv2d(16, 1, 1),                                   # 12
    )


class VQVAE(nn.Module):
    def __init__(self, D=32):
        super().__init__()
        self.D = D
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),    # 32
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),   # 16
            nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(),  # 8
            nn.Conv2d(128, 128, 4, 2, 1), nn.ReLU(),  # 4
            ResBlock(128),
            nn.Conv2d(128, D, 1),
        )
        self.embedding = nn.Parameter(torch.randn(NUM_CODES, D) * 0.5)
        self.decoder = make_decoder(D)

    def quantize(self, z):  # z (B, D, 4, 4)
        B, D, H, W = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, D)
        d = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embedding.t()
             + self.embedding.pow(2).sum(1)[None])
        idx = d.argmin(1)
        q = self.embedding[idx].view(B, H, W, D).permute(0, 3, 1, 2)
        return q, idx.view(B, H * W)

    def encode(self, m):  # m (B, 1, 64, 64) in [-1, 1]; returns codes (B, 16) row-major
        return self.quantize(self.encoder(m))[1]

    def decode_codes(self, idx):  # idx (B, 16)
        q = self.embedding[idx].view(-1, 4, 4, self.D).permute(0, 3, 1, 2)
        return self.decoder(q)

    def forward(self, m):
        z = self.encoder(m)
        q, idx = self.quantize(z)
        commit = F.mse_loss(z, q.detach())
        cb = F.mse_loss(q, z.detach())
        q_st = z + (q - z).detach()
        return self.decoder(q_st), idx, commit, cb


def save_npz(model: VQVAE, path):
    sd = {f"decoder.{k}": v for k, v in model.decoder.state_dict().items()}
    out = {"_vq_vae._embedding": model.embedding.detach().float().numpy()}
    for k, v in sd.items():
        out[k] = v.detach().float().numpy()
    np.savez(path, **out)


def load_decoder_npz(path):
    """Rebuild (embedding, decoder) from a vae-oid style npz (as a runtime would)."""
    z = np.load(path)
    emb = torch.from_numpy(z["_vq_vae._embedding"])
    dec = make_decoder(emb.shape[1])
    sd = {k[len("decoder."):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("decoder.")}
    dec.load_state_dict(sd)
    return emb, dec.eval()


def decode_masks(emb, dec, codes):
    """codes: (B, 16) ints -> (B, 64, 64) float in about [-1, 1]."""
    idx = torch.as_tensor(np.asarray(codes), dtype=torch.long)
    q = emb[idx].view(-1, 4, 4, emb.shape[1]).permute(0, 3, 1, 2)
    with torch.no_grad():
        return dec(q)[:, 0].numpy()
