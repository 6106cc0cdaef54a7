"""A database whose corpus, explanations and names hold HTML-looking text, and an HTML inspector."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import torch

from mechscope.features.db import FeatureDB
from mechscope.features.harvest import HarvestConfig, Harvester
from mechscope.features.source import dictionary_features
from mechscope.features.stats import StatsConfig
from tests.unit.features import helpers

NASTY = "<script>alert('x')</script> <!-- \"q\" ../../etc/passwd"
DICT = "tiny<b>-sae"
EXPLANATION = "<script>document.title='pwned'</script> & <!-- ../"


def nasty_db(path: Path, state: Path) -> FeatureDB:
    """Harvest the tiny SAE over text full of markup; every feature gets a hostile explanation."""
    model = helpers.model()
    ids = model.tokenizer.encode(NASTY * 8)
    toks = torch.tensor(ids[: (len(ids) // 16) * 16]).view(-1, 16)
    fs = dictionary_features(model, helpers.dictionary(), DICT)
    cfg = HarvestConfig(n_tokens=toks.shape[0] * 15, seq_len=16, batch_size=4, n_logits=3, n_neighbours=3,
                        stats=StatsConfig(top_k=4, reservoir=8, n_quantiles=4, left=6, right=3, n_bins=8))
    db = FeatureDB.open(path)
    Harvester(model, fs, db, cfg, model_name="tiny'\"<m>", state_dir=state, tokens=toks).run(progress=False)
    with db.transaction():
        for f in range(fs.n_features):
            db.put_explanation(DICT, f, "scripted", EXPLANATION)
            db.put_score(DICT, f, "scripted", "detection", 0.5, 10, {})
    return db


class Inspector(HTMLParser):
    """Collects start tags and text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def inspect(html: str) -> Inspector:
    """Parse ``html``."""
    p = Inspector()
    p.feed(html)
    return p
