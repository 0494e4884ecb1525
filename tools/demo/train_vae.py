"""Train the mask VQ-VAE on the shapes' masks; writes vae-oid.npz (decoder + codebook)."""
import argparse, os, sys, time
import numpy as np
import torch
import torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenes
from vae import VQVAE, save_npz, load_decoder_npz, decode_masks


def mask_set(seed0, n, sizes=(128, 128, 128, 192, 256)):
    out = []
    i = 0
    while len(out) < n:
        sc = scenes.sample_scene(seed0 + i, sizes[i % len(sizes)], p_word=0.0)
        for o in sc.objs:
            out.append(scenes.mask_crop(o))
        i += 1
    return torch.from_numpy(np.stack(out[:n]))[:, None] * 2 - 1


def iou(a, b):
    inter = np.logical_and(a, b).sum((1, 2)); union = np.logical_or(a, b).sum((1, 2))
    return inter / np.maximum(union, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--out", default="Models/demo/vae-oid.npz")
    ap.add_argument("--ckpt", default="/tmp/demo_vae.pt")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    train = mask_set(10_000_000, 12000)
    test = mask_set(20_000_000, 500)
    print(f"masks: {train.shape} ({time.time()-t0:.1f}s)", flush=True)
    m = VQVAE(args.dim)
    # init codebook from encoder outputs
    with torch.no_grad():
        z = m.encoder(train[:256]).permute(0, 2, 3, 1).reshape(-1, args.dim)
        m.embedding.copy_(z[torch.randperm(len(z))[:128]])
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    bs = 32
    for step in range(args.steps + 1):
        lr = 2e-3 * min(1, (step + 1) / 30) * (0.5 * (1 + np.cos(np.pi * step / args.steps)) * 0.95 + 0.05)
        for g in opt.param_groups: g["lr"] = lr
        x = train[torch.randint(len(train), (bs,))]
        rec, idx, commit, cb = m(x)
        loss = F.mse_loss(rec, x) + cb + 0.25 * commit
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 100 == 0 and step < args.steps:  # restart dead codes
            with torch.no_grad():
                _, idx_all = m.quantize(m.encoder(train[:2048]))
                used = torch.bincount(idx_all.flatten(), minlength=128)
                dead = (used == 0).nonzero().flatten()
                if len(dead):
                    z = m.encoder(train[torch.randint(len(train), (64,))]).permute(0, 2, 3, 1).reshape(-1, args.dim)
                    m.embedding[dead] = z[torch.randint(len(z), (len(dead),))]
            with torch.no_grad():
                r = m.decode_codes(m.encode(test))[:, 0].numpy()
            print(f"step {step} loss {loss.item():.4f} dead {len(dead)} test IoU {iou(r > 0, test[:, 0].numpy() > 0).mean():.4f} ({time.time()-t0:.0f}s)", flush=True)
    torch.save(m.state_dict(), args.ckpt)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_npz(m, args.out)
    emb, dec = load_decoder_npz(args.out)
    with torch.no_grad():
        codes = m.encode(test).numpy()
    r = decode_masks(emb, dec, codes)
    print(f"final: mask IoU (64x64, test, via npz decoder) {iou(r > 0, test[:, 0].numpy() > 0).mean():.4f}; "
          f"codes used {len(np.unique(codes))}; range [{r.min():.2f}, {r.max():.2f}] ({time.time()-t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
