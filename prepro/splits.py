"""Splits for the items a source gives none: exactly stratified per label, or by whole subjects so
that no identity is in two splits; and the listing order (`order_key`).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from prepro.errors import InputError
from prepro.labels import CANONICAL_LABELS
from prepro.specs import SPLITS

if TYPE_CHECKING:  # a type only: prepro.readers imports this module (listing order)
    from prepro.readers.records import RawItem


_SPLIT_RANK = {s: i for i, s in enumerate(SPLITS)}


def order_key(item: RawItem) -> tuple:
    """Listing order: split (train, val, test, None), then source id; CSV rows in file order.

    CSV rows are ordered by byte offset rather than by the text of their id ("row=10" would sort
    before "row=2"), so that reading them moves forward through a gzip stream.
    """
    rank = _SPLIT_RANK.get(item.split, len(SPLITS)) if item.split is not None else len(SPLITS)
    if item.offset >= 0:
        return (rank, item.path, item.offset, item.source_id)
    return (rank, "", -1, item.source_id)


def assign_splits(items: list[RawItem], val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0,
                  by_subject: bool = False) -> list[RawItem]:
    """Give a split to every item whose split is None; items with a split keep it.

    Without ``by_subject``: each label's items (unlabelled items as one more group) are shuffled
    with ``seed`` and the first round(n * test_frac) go to test, the next round(n * val_frac) to
    val: exactly stratified, and classes of one or two items simply stay in train. (sklearn's
    stratified splitters refuse classes with fewer than two members, common in small sets.)

    With ``by_subject``: whole subjects go to one split, so no identity is in two splits. sklearn's
    ``StratifiedGroupKFold`` (shuffled, seeded) picks one fold of about 1/round(1/test_frac) of the
    subjects as test, then one fold of the rest as val; it balances the label mix of the folds as
    far as whole subjects allow, so fractions are approximate. With fewer subjects than folds
    each split gets one subject (a warning says so). Pending items of a subject that already has a
    split from the source join that split. Every pending item needs a subject (InputError if not);
    bad fractions raise InputError too.

    Returns all items in listing order (`order_key`); deterministic for a given seed.
    """
    for name, frac in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not (isinstance(frac, (int, float)) and 0.0 <= frac < 1.0):
            raise InputError(f"{name} must be in [0, 1), got {frac!r}")
    if val_frac + test_frac >= 1.0:
        raise InputError(f"val_frac + test_frac must be below 1 (something must be left for train), "
                         f"got {val_frac} + {test_frac}")
    pending = sorted((it for it in items if it.split is None), key=order_key)
    done = [it for it in items if it.split is not None]
    if pending:
        if by_subject:
            done += _split_by_subject(pending, done, val_frac, test_frac, seed)
        else:
            done += _split_stratified(pending, val_frac, test_frac, seed)
    return sorted(done, key=order_key)


def _split_stratified(pending: list[RawItem], val_frac: float, test_frac: float, seed: int) -> list[RawItem]:
    """``pending`` with splits drawn per label (see `assign_splits`)."""
    rng = np.random.default_rng(seed)
    by_label: dict[str | None, list[RawItem]] = {}
    for it in pending:
        by_label.setdefault(it.label, []).append(it)
    out = []
    # a fixed label order (not dict or hash order) keeps the random stream the same on every run
    for label in sorted(by_label, key=lambda x: (x is None, x or "")):
        group = by_label[label]
        perm = rng.permutation(len(group))
        n_test = math.floor(len(group) * test_frac + 0.5)
        n_val = math.floor(len(group) * val_frac + 0.5)
        for rank, idx in enumerate(perm):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            out.append(replace(group[idx], split=split))
    return out


def _split_by_subject(pending: list[RawItem], done: list[RawItem], val_frac: float, test_frac: float,
                      seed: int) -> list[RawItem]:
    """``pending`` with splits by whole subjects (see `assign_splits`)."""
    missing = [it.source_id for it in pending if not it.subject]
    if missing:
        raise InputError(f"{len(missing)} item(s) have no subject (e.g. {missing[0]}), so they cannot be "
                         "split by subject; give a dataset with a subject pattern or split without subjects")
    # A subject that the source already placed keeps its place (its most common split).
    placed: dict[str, Counter] = {}
    for it in done:
        if it.subject:
            placed.setdefault(it.subject, Counter())[it.split] += 1
    out: list[RawItem] = []
    free: list[RawItem] = []
    for it in pending:
        if it.subject in placed:
            counts = placed[it.subject]
            split = min(counts, key=lambda s: (-counts[s], _SPLIT_RANK[s]))
            out.append(replace(it, split=split))
        else:
            free.append(it)
    if not free:
        return out
    label_code = {lab: i for i, lab in enumerate(CANONICAL_LABELS)}
    y = np.array([label_code.get(it.label, -1) for it in free])
    _, groups = np.unique(np.array([it.subject for it in free]), return_inverse=True)
    split_of = np.full(len(free), "train", dtype=object)
    rest = np.arange(len(free))
    rest_frac = 1.0
    for split, frac in (("test", test_frac), ("val", val_frac)):
        if frac <= 0 or rest.size == 0:
            continue
        chosen = _one_group_fold(y[rest], groups[rest], frac / rest_frac, seed, split)
        split_of[rest[chosen]] = split
        rest = rest[~chosen]
        rest_frac -= frac
    out.extend(replace(it, split=str(s)) for it, s in zip(free, split_of))
    return out


def _one_group_fold(y: np.ndarray, groups: np.ndarray, frac: float, seed: int, split: str) -> np.ndarray:
    """Boolean mask of one StratifiedGroupKFold fold holding about ``frac`` of the items."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise InputError(f"cannot make a {split} split by subject: only {n_groups} subject left")
    k = max(2, round(1.0 / frac))
    if k > n_groups:
        warnings.warn(f"only {n_groups} subjects left: the {split} split gets one of them "
                      f"(about {1 / n_groups:.0%} of the items, not {frac:.0%})", stacklevel=4)
        k = n_groups
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "least populated class has fewer members than n_splits": expected with few subjects
        warnings.filterwarnings("ignore", message="The least populated class")
        _, fold = next(cv.split(np.zeros(len(y)), y, groups))
    mask = np.zeros(len(y), dtype=bool)
    mask[fold] = True
    return mask
