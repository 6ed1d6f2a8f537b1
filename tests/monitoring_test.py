"""Monitoring on real reviews: the Kindle book files are the reference, reviews of other products
are production, and their true ratings are the feedback.

A calibrated logistic-regression champion is trained on 60 % of the Kindle book reviews
(both shared files), calibrated on 20 % and monitored on the other 20 % (in domain), on
Kindle device reviews (1-5 stars) and on print book reviews (labels 0 for 1-2 stars, 1 for
3-5: compared at that binary level). The test prints the estimate-versus-truth table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from libs.drift import check_performance, compare
from libs.drift.domain import DOMAIN_AUC_THRESHOLD, domain_drift
from libs.drift.performance import expected_confusion, observed_confusion
from libs.drift.reports import write_html_report
from libs.features import CLEAN_COLUMN, compute_features
from libs.models.bundle import ModelBundle, load_bundle
from libs.models.training.data import labelled_features, labels_of
from tests import fixtures
from tests.fixtures.browser import find_id, rendered_tree, text_of
from tests.fixtures.models import logreg_bundle

TOLERANCE = 0.05
"""How close the in-domain estimate must be to the truth, and how far a realised metric must
move before the estimate has to follow it."""
DEVICE_WORDS = {"device", "tablet", "screen", "battery", "charge", "alexa", "fire", "apps", "app", "amazon"}
LOW_STARS = 2
"""The print books' binary labels: 0 for 1-2 stars, 1 for 3-5."""


def binary_accuracy_of(confusion: np.ndarray) -> float:
    """Accuracy of the side (1-2 against 3-5 stars) from a 5×5 confusion matrix."""
    low, high = slice(0, LOW_STARS), slice(LOW_STARS, None)
    return float((confusion[low, low].sum() + confusion[high, high].sum()) / confusion.sum())


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelBundle, pd.DataFrame]:
    books = pd.concat([fixtures.kindle_sample(), fixtures.kindle_2018()], ignore_index=True)
    frame = labelled_features(books[books["reviewText"].notna()].reset_index(drop=True))
    train, rest = train_test_split(frame, test_size=0.4, stratify=labels_of(frame), random_state=0)
    validation, held_out = train_test_split(rest, test_size=0.5, stratify=labels_of(rest), random_state=0)
    path = logreg_bundle(train, tmp_path_factory.mktemp("champion") / "bundle", validation=validation)
    return load_bundle(path), held_out


@pytest.fixture(scope="module")
def domains(champion: tuple[ModelBundle, pd.DataFrame]) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """Each production side's features and true stars (print books: their 0/1 labels)."""
    _, held_out = champion
    devices = fixtures.kindle_devices()
    devices = labelled_features(devices[devices["reviewText"].notna()].reset_index(drop=True))
    books = fixtures.print_books()
    books = books[books["reviewText"].notna()].reset_index(drop=True)
    return {
        "kindle books (held out)": (held_out, np.asarray(labels_of(held_out))),
        "kindle devices": (devices, np.asarray(labels_of(devices))),
        "print books": (compute_features(books["reviewText"].tolist()), books["label"].to_numpy()),
    }


@pytest.fixture(scope="module")
def table(
    champion: tuple[ModelBundle, pd.DataFrame], domains: dict[str, tuple[pd.DataFrame, np.ndarray]]
) -> pd.DataFrame:
    """Estimate and truth per domain: accuracy, macro-F1 and MAE on 1-5 stars; the side's
    accuracy on every domain (the print books' only level)."""
    bundle, _ = champion
    rows = []
    for name, (features, truth) in domains.items():
        proba = bundle.predict_features(features)
        predicted = proba.argmax(axis=1) + 1
        row = {"domain": name, "reviews": len(truth)}
        sides = truth if name == "print books" else (truth > LOW_STARS).astype(int)
        realised_sides = observed_confusion(np.where(sides == 1, 5, 1), predicted)
        row |= {
            "est binary_accuracy": binary_accuracy_of(expected_confusion(proba)),
            "real binary_accuracy": binary_accuracy_of(realised_sides),
        }
        if name != "print books":
            check = check_performance(proba, proba, truth)
            assert check.estimate is not None and check.realised is not None
            for metric, value in check.estimate.values.items():
                row[f"est {metric}"] = value
                row[f"real {metric}"] = check.realised[metric]
        rows.append(row)
    result = pd.DataFrame(rows).set_index("domain")
    with pd.option_context("display.width", 200, "display.precision", 3):
        print(result.T)
    return result


def test_in_domain_the_estimate_is_within_tolerance_of_the_truth(table: pd.DataFrame) -> None:
    in_domain = table.loc["kindle books (held out)"]
    for metric in ("accuracy", "macro_f1"):
        assert abs(in_domain[f"est {metric}"] - in_domain[f"real {metric}"]) <= TOLERANCE, metric


@pytest.mark.parametrize(
    ("domain", "metrics"),
    [
        ("kindle devices", ("accuracy", "macro_f1", "mae_stars", "binary_accuracy")),
        ("print books", ("binary_accuracy",)),
    ],
)
def test_on_another_domain_the_estimate_moves_the_way_the_truth_does(
    table: pd.DataFrame, domain: str, metrics: tuple[str, ...]
) -> None:
    """Every metric whose realised value moved by more than the tolerance from the in-domain
    one: the estimate moved the same way. At least one metric must have moved."""
    home, away = table.loc["kindle books (held out)"], table.loc[domain]
    moved = [m for m in metrics if abs(away[f"real {m}"] - home[f"real {m}"]) > TOLERANCE]
    assert moved, f"no metric moved on {domain}: nothing to follow"
    for metric in moved:
        truth_moved = away[f"real {metric}"] - home[f"real {metric}"]
        estimate_moved = away[f"est {metric}"] - home[f"est {metric}"]
        assert np.sign(estimate_moved) == np.sign(truth_moved), (metric, estimate_moved, truth_moved)


def test_the_domain_classifier_separates_other_domains_and_names_device_words(
    champion: tuple[ModelBundle, pd.DataFrame], domains: dict[str, tuple[pd.DataFrame, np.ndarray]]
) -> None:
    """The reference side is what the champion's drift reference carries."""
    bundle, _ = champion
    assert bundle.drift_reference is not None
    reference = list(bundle.drift_reference.texts)
    verdicts = {
        name: domain_drift(reference, side[CLEAN_COLUMN].tolist()) for name, (side, _) in domains.items()
    }
    for name, verdict in verdicts.items():
        print(
            f"{name}: AUC {verdict.roc_auc:.3f}; production terms {[t for t, _ in verdict.production_terms]}"
        )
    assert verdicts["kindle books (held out)"].roc_auc < DOMAIN_AUC_THRESHOLD
    assert not verdicts["kindle books (held out)"].drifted
    assert verdicts["kindle devices"].roc_auc > 0.9
    assert verdicts["print books"].roc_auc > 0.8
    device_terms = {term for term, _ in verdicts["kindle devices"].production_terms}
    assert len(device_terms & DEVICE_WORDS) >= 3, device_terms


def test_the_drop_verdict_follows_the_estimate(
    champion: tuple[ModelBundle, pd.DataFrame], domains: dict[str, tuple[pd.DataFrame, np.ndarray]]
) -> None:
    """Against the champion's own held-out macro-F1: no drop in domain, a drop on devices."""
    bundle, held_out = champion
    in_domain = bundle.predict_features(held_out)
    reference = check_performance(in_domain, in_domain, labels_of(held_out)).realised
    assert reference is not None
    devices = bundle.predict_features(domains["kindle devices"][0])
    assert not check_performance(in_domain, reference=reference).degraded
    assert check_performance(devices, reference=reference).degraded


def test_reference_texts_are_a_bounded_sample(tmp_path: Path) -> None:
    """The drift reference keeps at most REFERENCE_TEXTS texts: bundles stay small."""
    from libs.drift.profile import REFERENCE_TEXTS, ReferenceProfile

    frame = labelled_features(fixtures.kindle_sample())
    texts = frame[CLEAN_COLUMN].tolist() * 2
    profile = ReferenceProfile.build(frame, texts=texts)
    assert len(profile.texts) == REFERENCE_TEXTS < len(texts)
    assert set(profile.texts) <= set(texts)
    profile.save(tmp_path / "reference.json")
    loaded = ReferenceProfile.load(tmp_path / "reference.json")
    assert loaded.texts == profile.texts
    assert loaded.fingerprint == ReferenceProfile.build(frame).fingerprint


def test_the_drift_report_shows_estimate_truth_reliability_and_terms_in_a_browser(
    champion: tuple[ModelBundle, pd.DataFrame],
    domains: dict[str, tuple[pd.DataFrame, np.ndarray]],
    tmp_path: Path,
) -> None:
    """The report of a device-review window with its feedback, loaded in headless Chromium."""
    bundle, held_out = champion
    assert bundle.drift_reference is not None
    devices, stars = domains["kindle devices"]
    proba = bundle.predict_features(devices)
    test = check_performance(
        bundle.predict_features(held_out), bundle.predict_features(held_out), labels_of(held_out)
    )
    assert test.realised is not None
    check = check_performance(proba, proba[:300], stars[:300], reference=test.realised)
    domain = domain_drift(list(bundle.drift_reference.texts), devices[CLEAN_COLUMN].tolist())
    page = write_html_report(compare(bundle.drift_reference, devices), tmp_path / "report", check, domain)
    document = rendered_tree(page)
    assert check.estimate is not None and check.realised is not None and check.error is not None
    performance = find_id(document, "performance")
    assert performance is not None and "DEGRADED" in text_of(performance)
    shown = {
        text_of(cells[0]): [text_of(cell) for cell in cells[1:]]
        for row in performance.iter("tr")
        if (cells := list(row.iter("td")))
    }
    assert shown["macro_f1"][0] == f"{check.estimate.values['macro_f1']:.4f}"
    assert shown["macro_f1"][2] == f"{check.realised['macro_f1']:.4f}"
    assert shown["accuracy"][3] == f"{check.error['accuracy']:.4f}"
    reliability = find_id(document, "reliability")
    image = None if reliability is None else reliability.find(".//img")
    assert image is not None and image.get("src") == "reliability.png"
    assert (tmp_path / "report" / "reliability.png").read_bytes().startswith(b"\x89PNG")
    text = find_id(document, "text-drift")
    assert text is not None and "TEXT DRIFT" in text_of(text)
    listed = next(ol for ol in text.iter("ol") if ol.get("class") == "production-terms")
    terms = [text_of(item).rsplit(" (", 1)[0] for item in listed.iter("li")]
    assert terms == [term for term, _ in domain.production_terms] and len(terms) == 20
