"""The refit set: the packed tensors some delta of a bundle changes.

Export records it in the manifest (``refit.changed``).  An engine built with
``REFIT_INDIVIDUAL`` marks exactly these tensors refittable, and a switch hands exactly these
to the refitter: every other packed tensor holds the base network's values in every network.
A bundle written before the field existed has the set computed from its deltas instead.

Each delta is checked against the recorded set when the reader first verifies it
(:func:`check_within`): a delta that changed a tensor outside the set would be applied to
weights the engine never refits, and the engine would silently keep the base values.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np

from ..errors import BundleError
from .sparse_codec import SparseDelta
from .weights import PackedLayout


def stray_tensors(layout: PackedLayout, changed: Sequence[str], delta: Union[np.ndarray, SparseDelta]) -> List[str]:
    """The tensors outside *changed* that *delta* changes (none, for a delta of this bundle)."""
    dense = delta.dense() if isinstance(delta, SparseDelta) else delta
    keep = set(changed)
    return [t.name for t in layout.tensors if t.name not in keep and dense[t.offset : t.offset + t.nbytes].any()]


def check_within(layout: PackedLayout, changed, delta, shown: str) -> None:
    """Raise :class:`BundleError` on *shown* when *delta* changes a tensor outside *changed* (None: not recorded)."""
    if changed is None:
        return
    stray = stray_tensors(layout, changed, delta)
    if stray:
        raise BundleError(
            shown,
            "changes {} tensor(s) that the manifest's refit.changed leaves out: {}{}".format(
                len(stray), ", ".join(stray[:4]), ", ..." if len(stray) > 4 else ""
            ),
        )


def refit_set(bundle) -> Tuple[List[str], bool]:
    """(the tensors some delta of *bundle* changes, in layout order; whether the manifest recorded them).

    Without ``refit.changed`` (an older bundle), every delta is read and compared with the base."""
    recorded = bundle.model.changed
    if recorded is not None:
        return list(recorded), True
    return bundle.layout.changed_tensors(bundle.read_delta(k) for k in range(bundle.num_superclasses)), False
