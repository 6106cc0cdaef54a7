"""The IOI case study's tour section: a finished run's behaviour, circuit roles and pictures.

Reuses ``out_dir/ioi`` or the recorded run in the repository's ``docs/img/ioi`` when present; otherwise a
small live run through ``run``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from mechscope.experiments.ioi.run import IOIConfig, run


def tour_section(out_dir: Path, model: Any = None) -> Any:
    """Report section. Reuses a finished run (``out_dir/ioi`` or the recorded run in the repository's
    ``docs/img/ioi``) when present; otherwise runs a small live configuration (a few prompts, no facts)."""
    from mechscope.viz.report import Section, esc, table_html

    run_dir = Path(out_dir) / "ioi"
    recorded = Path(__file__).resolve().parents[4] / "docs" / "img" / "ioi"
    if (run_dir / "summary.json").is_file():
        source = f"run directory {run_dir}"
    elif (recorded / "summary.json").is_file():
        run_dir, source = recorded, "the recorded run in docs/img/ioi (mechscope patch ioi)"
    else:
        run(IOIConfig(out_dir=str(run_dir), n_per_template=4, n_patch=2, n_path_senders=6, n_facts=0), model)
        source = "a small live run (2 patching prompts)"
    s = json.loads((run_dir / "summary.json").read_text())
    b, c = s["behaviour"], s["circuit"]
    imgs = "".join(_img(run_dir / f) for f in ("resid.png", "heads.png", "dla.png", "facts.png"))
    rows = [{"role": "name movers (DLA)", "heads": _fmt(c["name_movers_dla"])},
            {"role": "name movers (patching effect)", "heads": _fmt(c["name_movers_patching"])},
            {"role": "negative (DLA)", "heads": _fmt(c["negative_heads_dla"])},
            {"role": "S-inhibition (path → NM queries)", "heads": _fmt(c["s_inhibition_path"])},
            {"role": "duplicate-token (S2→S1)", "heads": _fmt(c["duplicate_token"])},
            {"role": "induction (S2→S1+1)", "heads": _fmt(c["induction"])},
            {"role": f"backup (ablating {', '.join(c['backup']['ablated'])})",
             "heads": _fmt(c["backup"]["compensating_heads"])}]
    body = (f"<p>IOI on {esc(s['model'])}: accuracy {b['accuracy']:.3f}, mean logit diff {b['mean_logit_diff']:.2f} "
            f"over {b['n_prompts']} prompts. Patching batch: {esc(c['patch_prompts'][0])} …</p>"
            + table_html(rows) + imgs)
    return Section(title="IOI and factual recall (causal interventions)", body=body, anchor="ioi",
                   notes=[f"Numbers from {source}."])


def _fmt(heads: list[Any]) -> str:
    return ", ".join(f"{h} ({v:+.2f})" for h, v in heads)


def _img(path: Path) -> str:
    if not path.is_file():
        return ""
    return f'<img alt="{path.stem}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"/>'
