"""``mechscope features``: harvest feature statistics into a database, explain, score, export, show.

    mechscope features harvest --model smollm2-135m --dictionary runs/sae --corpus stdlib-docs --tokens 200000 --db f.db
    mechscope features harvest --model smollm2-135m --neurons blocks.6.mlp.hook_post --tokens 200000 --db f.db
    mechscope features harvest --model smollm2-135m --dictionary runs/clt --layers all --db f.db   (a CLT, per layer)
    mechscope features show --db f.db [--dictionary NAME --feature 12] [--json]
    mechscope features export --db f.db --dictionary NAME --features 1,2,3 --out pages/
    mechscope features explain --db f.db --dictionary NAME --features 1,2 [--explainer-url URL]
    mechscope features score --db f.db --dictionary NAME --features 1,2 [--explainer-url URL]

``harvest`` resumes when rerun with the same arguments (its state lives in ``--state-dir``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mechscope.cli.common import fail_cleanly, load_model
from mechscope.errors import ConfigError

app = typer.Typer(help="Feature database: harvest, explain, score, export, show.", no_args_is_help=True,
                  add_completion=False)


def parse_features(text: str) -> list[int]:
    """``"1,2,5-7"`` -> ``[1, 2, 5, 6, 7]``."""
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"--features must be ids like 1,2,5-7, got {text!r}") from None
    return out


@app.command()
def harvest(
    db: Path = typer.Option(..., "--db", help="SQLite file (created in WAL mode) or postgresql:// URL."),
    model: str = typer.Option("smollm2-135m", "--model", help="Model name or path for mechscope.load."),
    dictionary: Path | None = typer.Option(None, "--dictionary", help="Dictionary directory (ours or SAELens)."),
    neurons: str | None = typer.Option(None, "--neurons", help="Harvest the neurons of this hook instead "
                                       "(e.g. blocks.6.mlp.hook_post)."),
    name: str | None = typer.Option(None, "--name", help="Name in the database (default: the directory name)."),
    layers: str | None = typer.Option(None, "--layers", help="A cross-layer transcoder only: all | 0,2,5-7; "
                                      "layer L becomes the feature set NAME:L<L>."),
    corpus: str = typer.Option("stdlib-docs", "--corpus", help="Named corpus or a path."),
    tokens: int = typer.Option(100_000, "--tokens", help="Tokens to harvest."),
    seq_len: int = typer.Option(64, "--seq-len", help="Tokens per sequence."),
    batch_size: int = typer.Option(16, "--batch-size", help="Sequences per forward pass."),
    top_k: int = typer.Option(20, "--top-k", help="Max-activating examples per feature."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="Checkpoints (default: DB path + .harvest)."),
    tokenizer: str = typer.Option("auto", "--tokenizer", help="auto | smollm2 | bytes (corpus tokenisation)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corpus order and the quantile samples."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One pass over a corpus: density, histograms, max-activating and quantile examples, logits, neighbours."""
    from mechscope.experiments.dictionaries.run import corpus_split
    from mechscope.features.db import FeatureDB
    from mechscope.features.harvest import HarvestConfig, Harvester
    from mechscope.features.source import clt_layer_features, dictionary_features, neuron_features
    from mechscope.features.stats import StatsConfig

    with fail_cleanly():
        if (dictionary is None) == (neurons is None):
            raise ConfigError("pass exactly one of --dictionary DIR or --neurons HOOK")
        from mechscope.dictionaries.clt import CrossLayerTranscoder
        from mechscope.dictionaries.io import load as load_dictionary

        d = load_dictionary(dictionary) if dictionary is not None else None
        clt = d if isinstance(d, CrossLayerTranscoder) else None
        if clt is not None and layers is None:
            raise ConfigError(f"{dictionary} is a cross-layer transcoder; pass --layers all or --layers L1,L2 "
                              f"(layers 0..{clt.cfg.n_layers - 1}; each layer is harvested as its own feature set)")
        if layers is not None and clt is None:
            raise ConfigError("--layers applies to a cross-layer transcoder (--dictionary DIR of a CLT) only")
        chosen = _clt_layers(str(layers), clt.cfg.n_layers) if clt is not None else []
        m = load_model(model)
        base = name or Path(str(dictionary)).resolve().name
        fsets = ([clt_layer_features(m, clt, i, base) for i in chosen] if clt is not None
                 else [dictionary_features(m, d, base)] if d is not None else [neuron_features(m, str(neurons))])
        for fs in fsets:
            if name and d is None:
                fs.name = name
            if dictionary is not None:
                fs.config["path"] = str(Path(dictionary).resolve())  # the web app's steering loads it from here
        cfg = HarvestConfig(n_tokens=tokens, seq_len=seq_len, batch_size=batch_size, seed=seed,
                            stats=StatsConfig(top_k=top_k, seed=seed))
        database = FeatureDB.open(db)
        where = state_dir or Path(f"{db}.harvest") if not str(db).startswith("postgres") else state_dir
        if where is None:
            raise ConfigError("a PostgreSQL --db needs --state-dir for the harvest checkpoints")
        ids = corpus_split(m, corpus, "train", tokenizer)
        summaries = [Harvester(m, fs, database, cfg, model_name=model, state_dir=where, tokens=ids).run()
                     for fs in fsets]
    summary: Any = summaries[0] if clt is None else summaries
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo("\n\n".join("\n".join(f"{k:>16}  {v}" for k, v in s.items()) for s in summaries))


def _clt_layers(text: str, n_layers: int) -> list[int]:
    """``--layers``: ``all`` or ids like ``0,2,5-7``, each in ``[0, n_layers)``."""
    if text.strip() == "all":
        return list(range(n_layers))
    msg = f"--layers must be 'all' or layers like 0,2,5-7 in 0..{n_layers - 1}, got {text!r}"
    try:
        got = parse_features(text) if text.strip() else []
    except ConfigError:
        raise ConfigError(msg) from None
    bad = [i for i in got if not 0 <= i < n_layers]
    if not got or bad:
        raise ConfigError(msg)
    return sorted(set(got))


@app.command()
def show(
    db: Path = typer.Option(..., "--db", help="Feature database."),
    dictionary: str | None = typer.Option(None, "--dictionary", help="Dictionary name."),
    feature: int | None = typer.Option(None, "--feature", help="Feature id (with --dictionary)."),
    q: str = typer.Option("", "--q", help="Search explanations."),
    sort: str = typer.Option("density", "--sort", help="density | score | feature."),
    limit: int = typer.Option(20, "--limit", help="Rows listed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List dictionaries / features, or print one feature."""
    from mechscope.features.db import FeatureDB

    with fail_cleanly():
        database = FeatureDB.open(db, read_only=True)
        data: Any
        if feature is not None:
            if dictionary is None:
                raise ConfigError("--feature needs --dictionary")
            data = database.feature(dictionary, feature)
            if data is None:
                raise ConfigError(f"no feature {feature} of dictionary {dictionary!r} in {db}")
        elif dictionary is None and not q:
            data = {"dictionaries": database.dictionaries(), "runs": database.runs()}
        else:
            data = database.search(q, dictionary=dictionary or "", sort=sort, limit=limit)
    if as_json:
        typer.echo(json.dumps(data, indent=1, default=str))
    elif isinstance(data, list):
        for r in data:
            typer.echo(f"{r['dictionary']}/{r['feature']:<6} density {r['density']:.5f}  max {r['max_act']:.3f}  "
                       f"{r['explanation'] or ''}")
    else:
        typer.echo(json.dumps(data, indent=1, default=str))


@app.command()
def geometry(
    db: Path = typer.Option(..., "--db", help="Feature database (written)."),
    dictionary: str = typer.Option(..., "--dictionary", help="Feature set name in the database."),
    model: str | None = typer.Option(None, "--model", help="Model name or path (default: the feature set's model)."),
    weights: Path | None = typer.Option(None, "--weights", help="Dictionary directory (default: the path the "
                                        "harvest recorded)."),
    method: str = typer.Option("pca", "--method", help="pca | tsne."),
    clusters: int = typer.Option(8, "--clusters", help="k-means clusters."),
    seed: int = typer.Option(0, "--seed", help="Seed of t-SNE and k-means."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """(Re)compute a feature set's 2-D decoder map and clusters and store them (a harvest stores a PCA map)."""
    from mechscope.features import geometry as geo
    from mechscope.features.db import FeatureDB
    from mechscope.features.source import clt_layer_features, dictionary_features, neuron_features

    with fail_cleanly():
        database = FeatureDB.open(db, create=False)
        rows = [d for d in database.dictionaries() if d["name"] == dictionary]
        if not rows:
            names = ", ".join(d["name"] for d in database.dictionaries()) or "none"
            raise ConfigError(f"no feature set {dictionary!r} in {db} (feature sets: {names})")
        row = rows[0]
        m = load_model(model or row["model"])
        if row["kind"] in ("sae", "clt"):
            from mechscope.dictionaries.io import load as load_dictionary

            what = "CLT" if row["kind"] == "clt" else "dictionary"
            path = weights or row["config"].get("path")
            if not path:
                raise ConfigError(f"feature set {dictionary!r} records no {what} path; pass --weights DIR")
            d = load_dictionary(path)
            fs = (clt_layer_features(m, d, int(row["config"]["clt_layer"]), dictionary) if row["kind"] == "clt"
                  else dictionary_features(m, d, dictionary, hook=row["hook"]))
        else:
            fs = neuron_features(m, row["hook"], int(row["n_features"]))
        fmap = geo.decoder_map(fs.directions, method=method, n_clusters=clusters, seed=seed)
        geo.store(database, dictionary, fmap)
        sizes = sorted((int(c), int((fmap.cluster == c).sum())) for c in set(fmap.cluster.tolist()))
    out = {"dictionary": dictionary, "method": method, "features": int(fmap.xy.shape[0]), "cluster_sizes": dict(sizes)}
    typer.echo(json.dumps(out) if as_json else "\n".join(f"{k:>14}  {v}" for k, v in out.items()))


@app.command()
def export(
    db: Path = typer.Option(..., "--db", help="Feature database."),
    dictionary: str = typer.Option(..., "--dictionary", help="Dictionary name."),
    features: str = typer.Option(..., "--features", help="Feature ids: 1,2,5-7."),
    out: Path = typer.Option(..., "--out", help="Directory for index.html and <feature>.html."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Write static, self-contained HTML feature pages."""
    from mechscope.features.db import FeatureDB
    from mechscope.features.export import export as run

    with fail_cleanly():
        paths = run(FeatureDB.open(db, read_only=True), dictionary, parse_features(features), out)
    typer.echo(json.dumps([str(p) for p in paths]) if as_json else "\n".join(str(p) for p in paths))


def _client(explainer_url: str | None, explainer_model: str) -> Any:
    if explainer_url:
        from mechscope.features.autointerp.clients import HTTPChat

        return HTTPChat(explainer_url, explainer_model)
    from mechscope.features.autointerp.clients import LocalChat

    return LocalChat(load_model(explainer_model), explainer_model)


@app.command()
def explain(
    db: Path = typer.Option(..., "--db", help="Feature database."),
    dictionary: str = typer.Option(..., "--dictionary", help="Dictionary name."),
    features: str = typer.Option(..., "--features", help="Feature ids: 1,2,5-7."),
    explainer_url: str | None = typer.Option(None, "--explainer-url", help="OpenAI-compatible endpoint "
                                             "(default: the embedded model, offline)."),
    explainer_model: str = typer.Option("smollm2-135m", "--explainer-model", help="Model name (local: loaded "
                                        "with mechscope.load; remote: sent as 'model')."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Explain features from their examples with a language model (stored in the database)."""
    from mechscope.features.autointerp.run import explain_features
    from mechscope.features.db import FeatureDB

    with fail_cleanly():
        database = FeatureDB.open(db, create=False)
        out = explain_features(database, dictionary, parse_features(features), _client(explainer_url, explainer_model))
    typer.echo(json.dumps(out) if as_json else "\n".join(f"{k}: {v}" for k, v in out.items()))


@app.command()
def score(
    db: Path = typer.Option(..., "--db", help="Feature database."),
    dictionary: str = typer.Option(..., "--dictionary", help="Dictionary name."),
    features: str = typer.Option(..., "--features", help="Feature ids: 1,2,5-7."),
    explainer_url: str | None = typer.Option(None, "--explainer-url", help="OpenAI-compatible endpoint of the "
                                             "scorer model (default: the embedded model)."),
    explainer_model: str = typer.Option("smollm2-135m", "--explainer-model", help="Scorer model name."),
    n: int = typer.Option(10, "--n", help="Snippets per class per scorer."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score stored explanations by detection and fuzzing (balanced accuracy; 0.5 = chance)."""
    from mechscope.features.autointerp.run import score_features
    from mechscope.features.db import FeatureDB

    with fail_cleanly():
        database = FeatureDB.open(db, create=False)
        out = score_features(database, dictionary, parse_features(features), _client(explainer_url, explainer_model),
                             n=n)
    typer.echo(json.dumps(out) if as_json else "\n".join(f"{k}: {v}" for k, v in out.items()))
