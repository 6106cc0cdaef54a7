"""Every case study is ``experiments/<study>/`` (config, run, analysis, report); the old import paths still work."""

from __future__ import annotations

import importlib

import pytest

# old path, name -> canonical module that owns it
OLD_PATHS = [
    ("mechscope.experiments.grokking", "run", "mechscope.experiments.grokking.run"),
    ("mechscope.experiments.grokking", "GrokkingConfig", "mechscope.experiments.grokking.config"),
    ("mechscope.experiments.grokking", "QUICK", "mechscope.experiments.grokking.config"),
    ("mechscope.experiments.grokking", "analyze", "mechscope.experiments.grokking.analysis"),
    ("mechscope.experiments.grokking", "cached_analysis", "mechscope.experiments.grokking.analysis"),
    ("mechscope.experiments.grokking", "tour_section", "mechscope.experiments.grokking.report"),
    ("mechscope.experiments.grokking_plots", "make_figures", "mechscope.experiments.grokking.report"),
    ("mechscope.experiments.grokking_plots", "SUMMARY_KEYS", "mechscope.experiments.grokking.report"),
    ("mechscope.experiments.induction", "InductionConfig", "mechscope.experiments.induction.config"),
    ("mechscope.experiments.induction", "train", "mechscope.experiments.induction.run"),
    ("mechscope.experiments.induction", "_lm_loss", "mechscope.experiments.induction.run"),
    ("mechscope.experiments.induction", "analyze", "mechscope.experiments.induction.analysis"),
    ("mechscope.experiments.induction", "tour_section", "mechscope.experiments.induction.report"),
    ("mechscope.experiments.induction_analysis", "load_config", "mechscope.experiments.induction.config"),
    ("mechscope.experiments.induction_analysis", "halfway_step", "mechscope.experiments.induction.analysis"),
    ("mechscope.experiments.induction_analysis", "tour_section", "mechscope.experiments.induction.report"),
    ("mechscope.experiments.induction_report", "smollm2_view", "mechscope.experiments.induction.report"),
    ("mechscope.experiments.superposition", "SuperpositionExperimentConfig",
     "mechscope.experiments.superposition.config"),
    ("mechscope.experiments.superposition", "run", "mechscope.experiments.superposition.run"),
    ("mechscope.experiments.superposition", "run_phase", "mechscope.experiments.superposition.run"),
    ("mechscope.experiments.superposition", "tour_section", "mechscope.experiments.superposition.report"),
    ("mechscope.toy.report", "section_html", "mechscope.experiments.superposition.report"),
    ("mechscope.experiments.ioi", "IOIConfig", "mechscope.experiments.ioi.run"),
    ("mechscope.experiments.ioi", "tour_section", "mechscope.experiments.ioi.report"),
    ("mechscope.experiments.dictionaries", "train_on_store", "mechscope.experiments.dictionaries.run"),
    ("mechscope.experiments.dictionaries", "mix", "mechscope.experiments.dictionaries.run"),  # not in run's __all__
    ("mechscope.experiments.dictionaries", "pareto_figure", "mechscope.experiments.dictionaries.report"),
    ("mechscope.experiments.circuits_ioi", "ioi_task", "mechscope.experiments.circuits_ioi.run"),
    ("mechscope.experiments.compound_words", "probe_compound", "mechscope.experiments.compound_words.run"),
    ("mechscope.experiments.equality", "EqualityConfig", "mechscope.experiments.equality.run"),
    ("mechscope.experiments.truth", "ccs_study", "mechscope.experiments.truth.run"),
    ("mechscope.experiments.probing", "truth_probe_sweep", "mechscope.experiments.probing.run"),
    ("mechscope.experiments.scrub_induction", "ScrubInductionConfig", "mechscope.experiments.scrub_induction.run"),
    ("mechscope.experiments.features", "study", "mechscope.experiments.features.run"),
    ("mechscope.experiments.scaling", "run_sweep", "mechscope.experiments.scaling.run"),
    ("mechscope.dictionaries.io", "load_saelens", "mechscope.dictionaries.saelens_format"),
    ("mechscope.dictionaries.io", "atomic_write_json", "mechscope.dictionaries.files"),
    ("mechscope.dictionaries.splice", "Splice", "mechscope.dictionaries.splice_core"),
    ("mechscope.dictionaries.splice", "combine", "mechscope.dictionaries.splice_core"),
]


@pytest.mark.parametrize(("old", "name", "home"), OLD_PATHS)
def test_old_import_paths_give_the_canonical_objects(old: str, name: str, home: str) -> None:
    obj = getattr(importlib.import_module(old), name)
    assert obj is getattr(importlib.import_module(home), name)
    if callable(obj) and hasattr(obj, "__module__"):
        assert obj.__module__ == home


def test_a_study_package_finds_private_helpers_and_refuses_unknown_names() -> None:
    import mechscope.experiments.grokking as grokking
    import mechscope.experiments.ioi as ioi
    from mechscope.experiments.grokking import run as run_module_or_function
    from mechscope.experiments.ioi.report import _fmt

    assert ioi._fmt is _fmt and grokking._loss_fn is importlib.import_module(
        "mechscope.experiments.grokking.run")._loss_fn
    assert callable(run_module_or_function) and run_module_or_function.__module__ == "mechscope.experiments.grokking.run"
    with pytest.raises(AttributeError, match="'mechscope.experiments.ioi' has no attribute 'no_such_name'"):
        ioi.no_such_name  # noqa: B018


def test_tour_sections_come_from_each_case_studys_report() -> None:
    from mechscope.experiments.tour import EXTRA_SECTIONS

    for modname in EXTRA_SECTIONS:
        assert callable(importlib.import_module(modname).tour_section), modname
    assert set(EXTRA_SECTIONS) == {f"mechscope.experiments.{s}.report" for s in
                                   ("ioi", "induction", "grokking", "superposition", "dictionaries")}


def test_toy_report_alias_names_a_missing_attribute() -> None:
    import mechscope.toy.report as alias

    with pytest.raises(AttributeError, match="no_such_thing"):
        alias.no_such_thing  # noqa: B018


def test_tour_names_each_case_study_by_its_package() -> None:
    from mechscope.experiments.tour import EXTRA_SECTIONS, _study_name

    assert [_study_name(m) for m in EXTRA_SECTIONS] == ["ioi", "induction", "grokking", "superposition",
                                                         "dictionaries"]
    assert _study_name("mypkg.study") == "study"
