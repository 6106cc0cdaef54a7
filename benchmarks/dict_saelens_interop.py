"""Cross-check our SAELens-layout IO against the real SAELens (side venv), both directions.

1. mechscope writes relu/topk/jumprelu/gated/batchtopk/transcoder dictionaries with ``save_saelens``;
   SAELens ``SAE.load_from_disk`` loads each and encodes/decodes a fixed input; outputs must match ours.
2. SAELens builds random standard/topk/jumprelu/gated SAEs and saves them with ``save_model``;
   mechscope ``load_saelens`` loads them; our outputs must match SAELens's.
Prints JSON with the max abs differences. Usage: .venv/bin/python benchmarks/dict_saelens_interop.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PEER = r"""
import json, sys, torch
from pathlib import Path
from safetensors.torch import load_file, save_file
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig, JumpReLUSAE, JumpReLUSAEConfig, GatedSAE, GatedSAEConfig
root, mode = Path(sys.argv[1]), sys.argv[2]
x = load_file(str(root / "x.safetensors"))
if mode == "load":
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        sae = SAE.load_from_disk(str(d))
        xin = x["x"]
        acts = sae.encode(xin)
        save_file({"acts": acts.contiguous(), "recons": sae.decode(acts).contiguous()}, str(d / "peer_out.safetensors"))
else:
    torch.manual_seed(0)
    builders = {"standard": (StandardSAE, StandardSAEConfig, {}), "topk": (TopKSAE, TopKSAEConfig, {"k": 4}),
                "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}), "gated": (GatedSAE, GatedSAEConfig, {})}
    for name, (cls, ccls, kw) in builders.items():
        sae = cls(ccls(d_in=8, d_sae=16, **kw))
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(0.1 * torch.randn_like(p))
        sae.save_model(str(root / name))
        acts = sae.encode(x["x"])
        save_file({"acts": acts.contiguous(), "recons": sae.decode(acts).contiguous()}, str(root / name / "peer_out.safetensors"))
print("ok")
"""


def main() -> None:
    from mechscope.dictionaries import io
    from mechscope.dictionaries.registry import create, dictionary_class

    python = sys.argv[1] if len(sys.argv) > 1 else "/tmp/peers-venv/bin/python"
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(1))
    report: dict[str, dict[str, float]] = {"mechscope_to_saelens": {}, "saelens_to_mechscope": {}}
    kw = {"relu": {}, "topk": {"k": 4}, "jumprelu": {"init_threshold": 0.05}, "gated": {}, "batchtopk": {"k": 4},
          "transcoder": {"d_out": 5, "skip": True}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_file({"x": x}, str(root / "x.safetensors"))
        ours = {}
        for arch, extra in kw.items():
            d = create(dictionary_class(arch).config_class(d_in=8, d_sae=16, seed=3, **extra))
            with torch.no_grad():
                for p in d.parameters():
                    p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(4)))
                if arch == "batchtopk":
                    d.threshold.fill_(0.05)
                if arch != "transcoder":
                    d.with_config(input_scale=1.7, output_scale=1.7)  # exercised: folded on export
            io.save_saelens(d, root / arch)
            ours[arch] = d
        subprocess.run([python, "-c", PEER, str(root), "load"], check=True, capture_output=True, text=True)
        for arch, d in ours.items():
            peer = load_file(str(root / arch / "peer_out.safetensors"))
            with torch.no_grad():
                out = d(x)
                rec = out.recons if arch != "transcoder" else out.recons - x @ d.W_skip  # SAELens decode omits skip
            report["mechscope_to_saelens"][arch] = max(float((peer["acts"] - out.acts).abs().max()),
                                                       float((peer["recons"] - rec).abs().max()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_file({"x": x}, str(root / "x.safetensors"))
        subprocess.run([python, "-c", PEER, str(root), "save"], check=True, capture_output=True, text=True)
        for name in ("standard", "topk", "jumprelu", "gated"):
            d = io.load_saelens(root / name)
            peer = load_file(str(root / name / "peer_out.safetensors"))
            with torch.no_grad():
                out = d(x)
            report["saelens_to_mechscope"][name] = max(float((peer["acts"] - out.acts).abs().max()),
                                                       float((peer["recons"] - out.recons).abs().max()))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
